"""Activation patching of the base entity's every token, not only its last one.

A one-position edit (DAS, MDAS, the full patch) leaves the base entity's earlier tokens in place, and
positions reading them can still recover the base entity. `EntitySpanPatch` replaces every base
entity token: base column `base_pos - j` takes the source's state at `source_pos - j`, for j from 0
to the base entity's length - 1 (right-aligned at the two entities' last tokens; where the source
entity is shorter, the tokens before it fill in, and no column before the source's first is read).
It measures how much of the source entity a plain swap of the entity's tokens at a layer carries
(`benchmarks/das_sweep.py`); trained subspace edits can carry more.
"""

from __future__ import annotations

import torch

from hyperdas.target.evaluate import Encoded, states_after


def span_columns(base_start: int, base_pos: int, source_pos: int) -> list[tuple[int, int]]:
    """(base column, source column) pairs of one example, last entity token first."""
    if not 0 <= base_start <= base_pos:
        raise ValueError(f"base entity start {base_start} must lie in 0..its last token {base_pos}")
    return [(base_pos - j, source_pos - j) for j in range(min(base_pos - base_start, source_pos) + 1)]


class EntitySpanPatch:
    """Patches every base entity token from the source (see module doc); used like any method of
    `hyperdas.target.evaluate.evaluate` (it brings its own ``edit_for``)."""

    def edit_for(self, target, layer: int, enc: Encoded, index: list[int], rows, offsets):
        if not enc.base_start:
            raise ValueError("these encoded pairs carry no entity start: encode them with target.evaluate.encode")
        width = max(off + len(r) for off, r in zip(offsets, rows))
        sources = states_after(target, layer, [enc.source[i] for i in index])
        spans = [span_columns(enc.base_start[i], enc.base_pos[i], enc.source_pos[i]) for i in index]
        longest = max(len(s) for s in spans)
        spans = [s + [s[-1]] * (longest - len(s)) for s in spans]  # repeats write the same value again
        base_cols = torch.tensor([[off + b for b, _ in s] for off, s in zip(offsets, spans)], device=target.device)
        source_cols = torch.tensor([[c for _, c in s] for s in spans], device=sources.device)
        batch = torch.arange(len(index), device=target.device)[:, None]
        values = sources[batch.to(sources.device), source_cols]

        def edit(hidden):
            if hidden.shape[1] != width:
                return hidden
            out = hidden.clone()
            out[batch, base_cols] = values.to(device=hidden.device, dtype=hidden.dtype)
            return out

        return edit
