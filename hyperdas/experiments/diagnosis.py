"""Diagnosis of where a trained HyperDAS takes its answer from (notebook 04's `diagnosis` ablation).

(a) Cross-wiring, on conflict pairs (the instruction names entity X, the source activations come
    from entity Y): the selection A from one instruction and the subspace W from the other. If the
    output still follows X when only W was built from X's instruction, W carries the instructed
    entity (an instruction-chosen steering direction); if it follows X when only A was, the
    selection does.
(b) Sink knockout: the same model scored with the first position selectable and editable and
    with it excluded (`HyperDASConfig.sink`), and the soft selection's mass on the source's first
    token when it is allowed.
(c) Held-out entities: the scores on `test_entity` rows, whose entities training never saw.
(d) Written entity: the target's own answer with the activations' entity written into the base
    prompt (no edit), on the conflict pairs: how often a perfect edit of the entity could follow
    the activations at all (`hyperdas.target.conflict.written_entity_outcomes`).
"""

from __future__ import annotations

import contextlib

import torch

from hyperdas.experiments.leakage import conflict_outcomes
from hyperdas.hyper.model import HyperDAS, Inference, _right_pad, selection_matrices
from hyperdas.hyper.training import encoded_pairs
from hyperdas.target.conflict import written_entity_outcomes

DIAGNOSIS_PAIRS = 48  # conflict pairs per cross-wired variant: each variant stays well under a minute on a CPU
WIRINGS = {  # variant -> (instruction that builds A, instruction that builds W)
    "instructed": ("instructed", "instructed"),
    "faithful": ("faithful", "faithful"),
    "selection_faithful": ("faithful", "instructed"),
    "subspace_faithful": ("instructed", "faithful"),
}


class CrossWired:
    """A HyperDAS model in one mode whose plan takes A from one instruction and W from another.
    The encoded pairs carry the "instructed" instructions; `faithful[i]` is pair i's other one."""

    def __init__(self, model: HyperDAS, mode: str, faithful: list[list[int]], wiring: tuple[str, str]):
        self.model, self.mode, self.faithful, self.wiring = model, mode, faithful, wiring

    def edit_for(self, target, layer, enc, index, rows, offsets):
        other = _right_pad([self.faithful[i] for i in index], target.tokenizer.pad_token_id or 0, target.device)

        def planner(instruction, base_view, source_view, mode, straight_through):
            given = {"instructed": instruction, "faithful": other}
            # only the instructions this wiring reads: a one-instruction wiring plans once
            plans = {
                name: self.model.plan(given[name], base_view, source_view, mode, straight_through)
                for name in dict.fromkeys(self.wiring)
            }
            return plans[self.wiring[0]][0], plans[self.wiring[1]][1]

        return self.model.edit_for(target, layer, enc, index, rows, offsets, self.mode, planner)


def cross_wiring(target, model: HyperDAS, conflict: list[dict], mode: str, n: int = DIAGNOSIS_PAIRS) -> dict:
    """{variant: conflict outcome} for each wiring of `WIRINGS` on the first `n` conflict rows;
    "follows_instruction" means the value of the entity the instructed instruction names."""
    rows = conflict[:n]
    template = model.config.instruction
    faithful_rows = [{**r, "counterfactual_entity": r["activation_entity"]} for r in rows]
    faithful = encoded_pairs(target, faithful_rows, template).instructions
    encoder = lambda r: encoded_pairs(target, r, template)  # noqa: E731
    layer = model.config.layer
    return {
        name: conflict_outcomes(target, layer, CrossWired(model, mode, faithful, wiring), rows, encoder)
        for name, wiring in WIRINGS.items()
    }


@contextlib.contextmanager
def sink_rule(model: HyperDAS, sink: str):
    """The model with another `sink` rule for the block (inference only: no weight depends on it)."""
    old = model.config
    model.config = old.replace(sink=sink)
    try:
        yield model
    finally:
        model.config = old


@torch.no_grad()
def sink_mass(target, model: HyperDAS, enc, n: int = 16) -> float:
    """Mean share of the soft mix that comes from the source's first token, over the base prompt's
    columns up to its entity and the first `n` pairs of `enc`, with the first position allowed
    (`sink="keep"`). Columns the read cannot edit (with `base_read="entity"`, all but the entity's)
    count as 0, so the measure compares reads by the whole prompt, not per edited column."""
    index = list(range(min(n, len(enc))))
    with sink_rule(model, "keep"):
        matrices = selection_matrices(target, model, enc, index, "soft")
    shares = [A[0, : enc.base_pos[i] + 1].mean().item() for A, i in zip(matrices, index)]
    return sum(shares) / len(shares)


def diagnosis(runner, model: HyperDAS | None = None) -> list[dict]:
    """Records of (a) cross-wiring, (b) sink knockout, (c) held-out entities and (d) the written-entity
    reference for notebook 04, on `model` (default: the runner's trained base configuration)."""
    model = model or runner.trained(runner.config).model
    mode, config = runner.settings.mode, model.config
    records = []
    for variant, found in cross_wiring(runner.target, model, runner.conflict(), mode).items():
        records.append(runner.record("diagnosis", f"wiring:{variant}", found, config, part="cross_wiring"))
    reference = written_entity_outcomes(runner.target, runner.conflict())
    records.append(runner.record("diagnosis", "written_entity", reference, config, part="written_entity"))
    enc = runner.encoded(template=config.instruction)
    mass = sink_mass(runner.target, model, enc)
    for sink in ("keep", "exclude"):
        with sink_rule(model, sink):
            scored = runner.score(Inference(model, mode), enc)
        records.append(runner.record("diagnosis", f"sink:{sink}", scored, config, part="sink", sink_mass=mass))
    if "test_entity" in runner.pairs and len(runner.pairs["test_entity"]):
        scored = runner.score(Inference(model, mode), runner.encoded("test_entity", config.instruction))
        records.append(runner.record("diagnosis", "test_entity", scored, config, part="test_entity"))
    return records


def describe(records: list[dict]) -> list[str]:
    """Sentences computed from the diagnosis records."""
    lines = []
    for r in records:
        if r["part"] == "written_entity":
            lines.append(
                f"written entity (no edit): the target gives the activations' value in {r['follows_activations']:.0%} "
                f"of {r['n']} conflict pairs, the most an edit of the entity can be expected to reach"
            )
        elif r["part"] == "cross_wiring":
            lines.append(
                f"{r['variant']}: follows the activations in {r['follows_activations']:.0%} of {r['n']} conflict "
                f"pairs, the instructed entity in {r['follows_instruction']:.0%}"
            )
        else:
            o = r["overall"]
            extra = (
                f" (soft mass on the source's first token when allowed: {r['sink_mass']:.3f})"
                if "sink_mass" in r
                else ""
            )
            lines.append(
                f"{r['variant']}: Cause {o['cause']:.3f}, Iso {o['iso']:.3f}, Disentangle {o['disentangle']:.3f}; "
                f"conflict follows the activations {r['follows_activations']:.0%}{extra}"
            )
    return lines
