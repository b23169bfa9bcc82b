"""HyperDAS on the synthetic world. Its model's block 0 is local and every city name has two words:
the first spells the climate, the last identifies the city (hence its country). After layer 0 the
climate therefore lives on the entity's first token and the country on its last, so swapping one
attribute and not the other needs the right token for each: HyperDAS's selection. The test pairs
use a held-out template ("Postcard from ...").

Trained as the package trains (straight-through in the one-to-one mode, the headline mode), k=8,
one block, 1200 steps, lr 3e-4, after a soft warm-up of the first quarter of the steps. Without the
warm-up the one-to-one training reaches the known answers on some float trajectories and not on
others: a change of thread count, or of how the edited run lays out its rows (padded or packed;
the same gradients to 1e-5), flips a seed. Measured over training seeds 0-3 on one thread, without
the warm-up: padded rows 0 of 3 seeds reached Cause and Iso >= 0.9 on both attributes, packed rows
2 of 4 (the others stuck at Country or Climate Cause 0.23-0.55, their Iso down to 0); with it, 4 of 4
padded and 6 of 6 packed (seeds 0-2 and 4-6), each Cause and Iso >= 0.98 (`soft_warmup`; lr 1e-4 or no sparsity
penalty did not help: 0 of 4, 1 of 4). At lr 1e-3 training was unstable whichever selection it
trained (seed 1 of soft training: Country Cause 0.50), so the known answers use 3e-4. The soft mode
of a model trained one-to-one is not what was trained: the paper's soft training is tested on its
own (`test_soft_training_edits_from_the_activations`). MDAS at the last entity token cannot swap
Climate at all (Cause 0). The other known answers are stated on each test; float rounding differs
between CPU kernels, hence the margins."""

import pytest
import torch

from hyperdas.data.filter import FilterConfig, filter_domain
from hyperdas.data.pairs import PairConfig, build_pairs
from hyperdas.hyper.model import HyperDASConfig, Inference
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, train_hyperdas
from hyperdas.target.evaluate import evaluate, intervened_logits

ATTRIBUTES = ("Country", "Climate")
MODEL = HyperDASConfig(layer=0, k=8, n_blocks=1, selection_heads=4, position_offsets=8, sink="keep")
TRAIN = HyperTrainConfig(
    steps=1200, batch_size=16, lr=3e-4, lr_rotation=1e-2, eval_every=10**6, max_val_pairs=30, soft_warmup=0.25
)
HEADLINE = TRAIN.train_selection  # one_to_one: the mode training runs straight-through (the package default)
TRAIN = TRAIN.replace(eval_modes=(HEADLINE,))


@pytest.fixture(scope="module")
def pairs(synthetic_target, synthetic_data):
    known = filter_domain(
        synthetic_target,
        synthetic_data,
        FilterConfig(attributes=ATTRIBUTES, templates_per_attribute=None, max_entities=None),
        progress=False,
    )
    return build_pairs(
        synthetic_data,
        known,
        synthetic_target.tokenizer,
        PairConfig(target_attributes=ATTRIBUTES, max_pairs={"train": 1200, "val": 60, "test": 240}),
    )


@pytest.fixture(scope="module")
def trained(synthetic_target, pairs):
    torch.manual_seed(0)
    return train_hyperdas(synthetic_target, pairs, MODEL, TRAIN, progress=False).model


@pytest.fixture(scope="module")
def test_enc(synthetic_target, pairs):
    return encoded_pairs(synthetic_target, pairs["test"])


def _scores(target, model, enc, mode: str = HEADLINE) -> dict:
    return evaluate(target, 0, Inference(model, mode), enc)[0]["per_attribute"]["city"]


def test_hyperdas_swaps_each_attribute_and_nothing_else(synthetic_target, trained, test_enc):
    per = _scores(synthetic_target, trained, test_enc)
    for attribute in ATTRIBUTES:
        assert per[attribute]["cause"] >= 0.9 and per[attribute]["iso"] >= 0.9, (attribute, per[attribute])


def test_the_papers_head_misplaces_country_on_a_held_out_template(synthetic_target, pairs, trained, test_enc):
    """The same training without the selection head's position-offset features: Country Cause
    drops (measured 0.47 vs 0.97): on the held-out template the paper's head takes the source's
    "Postcard", a word whose state it never saw, about as often as the entity's last token."""
    torch.manual_seed(0)
    paper = train_hyperdas(synthetic_target, pairs, MODEL.replace(position_offsets=0), TRAIN, progress=False).model
    with_offsets, without = (_scores(synthetic_target, m, test_enc)["Country"]["cause"] for m in (trained, paper))
    assert without <= with_offsets - 0.2


def test_mdas_at_the_last_entity_token_cannot_swap_climate(synthetic_target, pairs):
    from hyperdas.das.training import DASConfig, select_rows, train_das
    from hyperdas.target.evaluate import encode

    config = DASConfig(method="mdas", target_attribute="Climate", layer=0, k=8, lr=1e-2, steps=100, eval_every=50)
    result = train_das(synthetic_target, pairs, config, progress=False)
    test = encode(synthetic_target.tokenizer, select_rows(pairs["test"], config))
    assert evaluate(synthetic_target, 0, result.intervention, test)[0]["overall"]["cause"] <= 0.1


def _selection_hits(target, model, enc) -> dict:
    """Per attribute: how often the base token that holds it (Climate: the entity's first token,
    Country: its last) takes the source's matching token in one-to-many mode."""
    hits, total = {a: 0 for a in ATTRIBUTES}, {a: 0 for a in ATTRIBUTES}
    with torch.no_grad():
        for start in range(0, len(enc), 32):
            batch = list(range(start, min(start + 32, len(enc))))
            intervened_logits(target, 0, Inference(model, "one_to_many"), enc, batch, None)
            A = model.last_plan[0]
            for b, i in enumerate(batch):
                attribute = enc.records[i]["target_attribute"]
                if enc.records[i]["attribute_type"] == "causal":
                    back = 1 if attribute == "Climate" else 0  # base_pos / source_pos: the entity's last token
                    total[attribute] += 1
                    hits[attribute] += int(A[b, :, enc.base_pos[i] - back].argmax()) == enc.source_pos[i] - back
    return {a: hits[a] / total[a] for a in ATTRIBUTES}


def test_selection_takes_the_token_that_holds_the_attribute(synthetic_target, trained, test_enc):
    # measured: 59 of 60 for each; chance is about 0.1 (one of ~10 selectable tokens)
    hits = _selection_hits(synthetic_target, trained, test_enc)
    assert hits["Country"] >= 0.9 and hits["Climate"] >= 0.75, hits


def test_without_the_instruction_it_does_clearly_worse(synthetic_target, pairs, trained, test_enc):
    """N=0 blocks and one constant instruction ("edit" for every pair): nothing tells the model which
    attribute to swap, so at best it swaps one of them everywhere (Disentangle <= 0.75 here;
    measured 0.40 against 0.99)."""
    torch.manual_seed(0)
    blind = train_hyperdas(
        synthetic_target, pairs, MODEL.replace(n_blocks=0, instruction="edit"), TRAIN, progress=False
    ).model
    blind_enc = encoded_pairs(synthetic_target, pairs["test"], "edit")
    scores = [
        evaluate(synthetic_target, 0, Inference(model, HEADLINE), enc)[0]["overall"]["disentangle"]
        for model, enc in ((trained, test_enc), (blind, blind_enc))
    ]
    assert scores[1] <= scores[0] - 0.1


def test_the_edit_follows_the_activations_and_the_hard_modes_edit(synthetic_target, pairs, trained, test_enc):
    """Conflict pairs (the instruction names one source entity, the activations come from another
    with a third value; 120 pairs): measured 0.975 follow the activations in both hard modes, none
    the instruction; their Cause 0.975."""
    from hyperdas.experiments.faithfulness import conflict_scores, conflict_set

    found = conflict_scores(synthetic_target, trained, conflict_set(pairs["test"]), ("one_to_many", "one_to_one"))
    for mode, shares in found.items():
        assert shares["follows_activations"] >= 0.9 and shares["follows_instruction"] <= 0.05, (mode, shares)
        assert evaluate(synthetic_target, 0, Inference(trained, mode), test_enc)[0]["overall"]["cause"] >= 0.9, mode


def test_soft_training_edits_from_the_activations(synthetic_target, pairs, test_enc):
    """The paper's training (soft selection): measured soft Cause 0.97 / 1.0 (Country / Climate),
    Iso 1.0, conflict pairs following the activations 1.0 (seed 0; 0.94 with training seed 1)."""
    from hyperdas.experiments.faithfulness import conflict_scores, conflict_set

    torch.manual_seed(0)
    soft = train_hyperdas(
        synthetic_target, pairs, MODEL, TRAIN.replace(train_selection="soft", eval_modes=("soft",)), progress=False
    ).model
    per = _scores(synthetic_target, soft, test_enc, "soft")
    assert all(per[a]["cause"] >= 0.9 and per[a]["iso"] >= 0.9 for a in ATTRIBUTES), per
    shares = conflict_scores(synthetic_target, soft, conflict_set(pairs["test"]), ("soft",))["soft"]
    assert shares["follows_activations"] >= 0.9 and shares["follows_instruction"] <= 0.05, shares
