"""The frozen target's residual stream after one layer, computed once per token row.

A one-position intervention (DAS, MDAS, full patching) changes nothing below its layer, and the
target never changes: the states after the layer of every base row, and the source vector of
every source row, are the same at every training step, validation and test pass. `LayerStates`
computes them once (no gradients) and `FromStates` runs an intervention from them, so a
teacher-forced pass only runs the blocks above the layer (`hyperdas.target.hooks.start_after`).
DAS and MDAS of one attribute share the rows they have in common.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from hyperdas.target.evaluate import Encoded, one_position_edit, states_after
from hyperdas.target.hooks import can_start_after, check_layer


class LayerStates:
    """States after `layer` of token rows, keyed by the rows' ids (see module doc)."""

    def __init__(self, target, layer: int, batch_size: int = 32):
        self.target, self.layer, self.batch_size = target, check_layer(target.n_layers, layer), batch_size
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @torch.no_grad()
    def fill(self, rows, progress: bool = False, desc: str = "layer states") -> None:
        """Compute the rows not held yet (in batches of similar width: little padding)."""
        missing = sorted({tuple(r) for r in rows} - self._rows.keys(), key=lambda r: (len(r), r))
        for start in tqdm(range(0, len(missing), self.batch_size), desc=desc, disable=not progress):
            chunk = missing[start : start + self.batch_size]
            hidden = states_after(self.target, self.layer, [list(r) for r in chunk])
            for b, row in enumerate(chunk):
                self._rows[row] = hidden[b, : len(row)].clone()

    def fill_pairs(self, enc: Encoded, progress: bool = False) -> None:
        """The base and source rows of every pair of `enc`."""
        self.fill([*enc.base, *enc.source], progress)

    def padded(self, rows) -> torch.Tensor:
        """(B, T, D) states of right-padded `rows` (zeros at padding)."""
        self.fill(rows)
        held = [self._rows[tuple(r)] for r in rows]
        out = held[0].new_zeros(len(held), max(len(r) for r in rows), held[0].shape[-1])
        for b, h in enumerate(held):
            out[b, : h.shape[0]] = h
        return out

    def sources(self, enc: Encoded, index: list[int]) -> torch.Tensor:
        """(n, D) source vectors of pairs `index` (each source's entity position), float32."""
        rows = [enc.source[i] for i in index]
        self.fill(rows)
        return torch.stack([self._rows[tuple(r)][enc.source_pos[i]] for r, i in zip(rows, index)]).float()


class FromStates(nn.Module):
    """A one-position `intervention` whose teacher-forced passes start after the layer from `states`
    (generation's left-padded prompts run every block, its sources still come from `states`)."""

    def __init__(self, intervention: nn.Module, states: LayerStates):
        super().__init__()
        self.intervention, self.states = intervention, states

    def edit_for(self, target, layer: int, enc: Encoded, index: list[int], rows, offsets):
        if check_layer(target.n_layers, layer) != self.states.layer:
            raise ValueError(f"states were computed after layer {self.states.layer}, the edit is after layer {layer}")
        edit = one_position_edit(self.intervention, target, enc, index, self.states.sources(enc, index), rows, offsets)
        if not any(offsets) and can_start_after(target):
            edit.start = self.states.padded(rows)
        return edit


def with_states(intervention: nn.Module, states: LayerStates | None) -> nn.Module:
    """`intervention` run from `states` when given, else as it is."""
    return intervention if states is None else FromStates(intervention, states)
