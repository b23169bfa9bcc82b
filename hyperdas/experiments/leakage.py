"""Parts that replace one piece of a HyperDAS model, and the leakage controls built from them.

The instruction names the source entity, so a hypernetwork could make the target say the answer
by steering rather than by moving the source's activations. The controls (method doc section 4):

(a) conflict: keep the instruction, swap in the activations of another source entity whose value
    differs; a faithful method follows the activations, a leaky one the instruction;
(b) entity names blanked from the instruction;
(c) a random orthonormal subspace of the same rank in place of W;
(d) fixed positions (base and source entity's last token) with the learned W.

Parts are swapped in with `swapped(model, part=module)`, which puts the original back on exit.
"""

from __future__ import annotations

import contextlib
import random

import torch
from torch import nn

from hyperdas.target.conflict import OUTCOMES, conflict_outcomes, conflict_variants, outcome_fractions  # noqa: F401
from hyperdas.target.evaluate import encode, source_vectors
from hyperdas.target.hooks import replace_at

BLANKED_INSTRUCTION = "_ ; _ - {target_attribute}"
LOOKUP_INSTRUCTION = "{counterfactual_entity} - {target_attribute}"  # the lookup table's key


@contextlib.contextmanager
def swapped(model: nn.Module, **parts: nn.Module):
    """Replace submodules of `model` by name (e.g. ``selection=FixedSelection()``) for the block."""
    unknown = [name for name in parts if not isinstance(getattr(model, name, None), nn.Module)]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no part(s) {unknown} to swap")
    old = {name: getattr(model, name) for name in parts}
    try:
        for name, part in parts.items():
            setattr(model, name, part)
        yield model
    finally:
        for name, part in old.items():
            setattr(model, name, part)


class FixedSubspace(nn.Module):
    """The same W (D, k) for every instruction: control (c) with a random orthonormal one."""

    def __init__(self, W: torch.Tensor):
        super().__init__()
        self.register_buffer("W", W)
        self.temperature = 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.W.to(z.dtype).expand(z.shape[0], -1, -1)


def random_orthonormal(hidden: int, k: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, k, generator=generator))
    return q


class FixedSelection(nn.Module):
    """Control (d): the source entity's last token feeds the base entity's last token, nothing else.

    Without the suffix, each selectable mask ends at the entity's last token, so that is where
    the masks' last True sits."""

    def forward(self, z, base, base_mask, source, source_mask) -> torch.Tensor:
        B, Tb, Ts = base.shape[0], base.shape[1], source.shape[1]
        A = torch.zeros(B, Ts + 1, Tb, dtype=base.dtype, device=base.device)
        A[:, -1] = 1
        batch = torch.arange(B, device=base.device)
        base_last, source_last = base_mask.long().sum(1) - 1, source_mask.long().sum(1) - 1
        A[batch, -1, base_last] = 0
        A[batch, source_last, base_last] = 1
        return A


class LookupTable(nn.Module):
    """Ablation 4: the hypernetwork replaced by one free vector per instruction key (with
    `LOOKUP_INSTRUCTION`, per (source entity, attribute)); keys unseen in training share row 0."""

    def __init__(self, keys: list[list[int]], hidden: int):
        super().__init__()
        self.index = {tuple(k): i + 1 for i, k in enumerate(sorted({tuple(k) for k in keys}))}
        self.table = nn.Embedding(len(self.index) + 1, hidden)
        nn.init.normal_(self.table.weight, std=hidden**-0.5)

    def rows(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.tensor(
            [self.index.get(tuple(i[m].tolist()), 0) for i, m in zip(ids, mask.bool())], device=ids.device
        )

    def forward(self, ids, mask, *_states) -> torch.Tensor:
        return self.table(self.rows(ids, mask))


def conflict_rows(rows, seed: int = 0) -> list[dict]:
    """Control (a): for each causal row, the source prompt of another source entity (same domain and
    attribute) whose value differs from both the instructed source's and the base's; the
    instruction still names the original source. `counterfactual_target` is the activations'
    value, `instruction_target` the instructed one. Rows without such a partner are left out."""
    rng = random.Random(seed)
    causal = [dict(r) for r in rows if r["attribute_type"] == "causal"]
    by_key: dict[tuple, list[dict]] = {}
    for r in causal:
        by_key.setdefault((r["domain"], r["target_attribute"]), []).append(r)
    out = []
    for r in causal:
        partners = [
            q
            for q in by_key[(r["domain"], r["target_attribute"])]
            if q["counterfactual_entity"] != r["counterfactual_entity"]
            and q["counterfactual_target"] not in (r["counterfactual_target"], r["target"])
        ]
        if not partners:
            continue
        q = rng.choice(partners)
        out.append(
            {
                **r,
                "counterfactual_input_prefix": q["counterfactual_input_prefix"],
                "counterfactual_input_suffix": q["counterfactual_input_suffix"],
                "source_entity_position": q["source_entity_position"],
                "counterfactual_target": q["counterfactual_target"],
                "activation_entity": q["counterfactual_entity"],
                "instruction_target": r["counterfactual_target"],
            }
        )
    return out


class InstructionLeak:
    """A deliberately leaky method for testing control (a): at the base entity token it writes the
    activation of the entity the instruction names (`vectors[counterfactual_entity]`), whatever
    source it is given."""

    def __init__(self, vectors: dict[str, torch.Tensor]):
        self.vectors = vectors

    def edit_for(self, target, layer, enc, index, rows, offsets):
        width = max(off + len(r) for off, r in zip(offsets, rows))
        pos = torch.tensor([off + enc.base_pos[i] for off, i in zip(offsets, index)], device=target.device)
        new = torch.stack([self.vectors[enc.records[i]["counterfactual_entity"]] for i in index]).to(target.device)

        def edit(hidden):
            return hidden if hidden.shape[1] != width else replace_at(hidden, pos, new.to(hidden.dtype))

        return edit


def entity_vectors(target, layer: int, rows) -> dict[str, torch.Tensor]:
    """Each source entity's residual vector after `layer` at its last token (first prompt seen)."""
    first = {}
    for r in rows:
        first.setdefault(r["counterfactual_entity"], r)
    chosen = list(first.values())
    vectors = source_vectors(target, layer, encode(target.tokenizer, chosen))
    return {r["counterfactual_entity"]: v for r, v in zip(chosen, vectors)}
