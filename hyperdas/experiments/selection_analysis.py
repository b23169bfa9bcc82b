"""What a trained HyperDAS selects, read from its selection matrices on the runner's test rows: soft
selection's entropy and mass on the entity's last token, a few saved matrices, and which entity
sub-token one-to-many selection picks (ablations `sparsity` and `symmetric`)."""

from __future__ import annotations

from hyperdas.experiments.ablation_runner import AblationRunner
from hyperdas.hyper.model import HyperDAS, selection_matrices, selection_record


def _matrices(runner: AblationRunner, model: HyperDAS, index: list[int], mode: str = "soft"):
    return selection_matrices(runner.target, model, runner.encoded(template=model.config.instruction), index, mode)


def selection_stats(runner: AblationRunner, model: HyperDAS, n: int | None = None) -> dict:
    """Soft selection's mean entropy (nats) over the selectable base columns, and the fraction of
    source mass placed on the source entity's last token."""
    enc = runner.encoded(template=model.config.instruction)
    index = list(range(len(enc) if n is None else min(n, len(enc))))
    entropies, on_last = [], []
    for start in range(0, len(index), 32):
        batch = index[start : start + 32]
        for i, A in zip(batch, _matrices(runner, model, batch)):
            columns = A[:, : enc.base_pos[i] + 1]
            entropies.append(float(-(columns * columns.clamp_min(1e-12).log()).sum(0).mean()))
            mass = A[:-1].sum()
            on_last.append(float(A[enc.source_pos[i]].sum() / mass) if mass > 0 else 0.0)
    return {"selection_entropy": sum(entropies) / len(entropies), "last_token_mass": sum(on_last) / len(on_last)}


def saved_selections(runner: AblationRunner, model: HyperDAS) -> list[dict]:
    enc = runner.encoded(template=model.config.instruction)
    index = list(range(min(runner.settings.n_selections, len(enc))))
    rows = runner.rows()
    return [
        selection_record(runner.target.tokenizer, enc, i, A, instruction=rows[i]["edit_instruction"])
        for i, A in zip(index, _matrices(runner, model, index))
    ]


def entity_span(tokenizer, prefix: str, suffix: str, entity: str) -> tuple[int, int]:
    """(first, last) token index of the entity that ends `prefix` (special tokens counted)."""
    encoded = tokenizer(prefix + suffix, add_special_tokens=True, return_offsets_mapping=True)
    first_char, last_char = len(prefix) - len(entity), len(prefix) - 1
    hits = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > first_char and s <= last_char and e > s]
    return hits[0], hits[-1]


def token_role(t: int, span: tuple[int, int]) -> str:
    first, last = span
    return "last" if t == last else "first" if t == first else "middle" if first < t < last else "other"


def subtoken_picks(runner: AblationRunner, model: HyperDAS) -> dict:
    """One-to-many selection: per attribute, the fraction of examples whose most-used source token
    and most-fed base token is the entity's first / middle / last sub-token, another token, or none."""
    enc = runner.encoded(template=model.config.instruction)
    rows, tok = runner.rows(), runner.target.tokenizer
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for start in range(0, len(enc), 32):
        batch = list(range(start, min(start + 32, len(enc))))
        for i, A in zip(batch, _matrices(runner, model, batch, "one_to_many")):
            r = rows[i]
            used = A[:-1].sum(1)
            fed = 1 - A[-1]
            roles = {
                "source": "none"
                if used.sum() == 0
                else token_role(
                    int(used.argmax()),
                    entity_span(
                        tok,
                        r["counterfactual_input_prefix"],
                        r["counterfactual_input_suffix"],
                        r["counterfactual_entity"],
                    ),
                ),
                "base": "none"
                if fed.sum() == 0
                else token_role(int(fed.argmax()), entity_span(tok, r["input_prefix"], r["input_suffix"], r["entity"])),
            }
            per = counts.setdefault(r["target_attribute"], {"source": {}, "base": {}})
            for side, role in roles.items():
                per[side][role] = per[side].get(role, 0) + 1
    return {
        a: {side: {role: c / sum(d.values()) for role, c in sorted(d.items())} for side, d in per.items()}
        for a, per in counts.items()
    }
