"""HyperDAS as one module: read the target, pick positions, build the subspace, edit the base run.

1. Read (no gradient): the target runs on base and source; the hidden states of every layer
   (embeddings + all blocks) are L2-normalised and kept at the selectable positions only (the
   prompt up to and including the entity; never answer tokens; the suffix only when asked; with
   `base_read="entity"`, the base entity alone: `hyperdas.hyper.reads`).
2. The hypernetwork reads the instruction with cross-attention to those states -> z.
3. The selection head gives A (which source token, or none, feeds each base token) from z and the
   layer-L states; the subspace module gives W from z.
4. The base run is edited after layer L at every base position: h' = h + W Wᵀ (s − h), s the
   A-weighted mix of real source and base activations (`hyperdas.hyper.subspace.interchange`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hyperdas.core.config import ConfigError, FrozenConfig, check_ranges
from hyperdas.hyper.hypernetwork import INITS, HyperNetwork
from hyperdas.hyper.reads import BASE_READS, read_rule
from hyperdas.hyper.selection import MODES, POSITIONS, SelectionHead, harden
from hyperdas.hyper.subspace import HEADS, KINDS, ROTATION_MAPS, Subspace, interchange
from hyperdas.target.hooks import check_layer

DEFAULT_INSTRUCTION = "{entity} ; {counterfactual_entity} - {target_attribute}"  # the official format
SINK_RULES = ("keep", "exclude")


@dataclasses.dataclass(frozen=True)
class HyperDASConfig(FrozenConfig):
    layer: int = 15
    # 128, as the paper and the baselines: on the embedded model it beat 32 in Disentangle and in the
    # share of conflict pairs following the activations (CHANGELOG.md)
    k: int = 128
    n_blocks: int = 2
    init: str = "target"  # "target": copies of the target's blocks; "scratch"
    subspace: str = "householder"  # householder | shared | mask | none
    source_ca: bool = True
    base_ca: bool = True
    symmetric_features: bool = False
    # learned offset features in the selection head (our addition; 0 is the paper's head). 8 on the
    # embedded model: the hard modes edit and the conflict control follows the instruction in 5% of
    # pairs, unlike with the paper's head (CHANGELOG.md)
    position_offsets: int = 8
    include_suffix: bool = False  # let the hypernetwork read the prompt after the entity
    # "entity": read the base entity alone, not its template, so the plan cannot depend on the
    # question the base prompt asks (`hyperdas.hyper.reads`); "prompt": the paper's read. Measured on
    # the embedded model: with "prompt" HyperDAS never edits base prompts whose text before the entity
    # hides the question (query-blind Cause 0), so its Iso came from reading the question (CHANGELOG.md)
    base_read: str = "entity"
    selection_heads: int = 8
    instruction: str = DEFAULT_INSTRUCTION  # str.format over the pair's fields
    selection_positions: str = "none"  # "rotary": the official pair-dependent scores (`selection`)
    ca_positions: bool = False  # rotary positions on the cross-attention keys (official)
    # "exclude": position 0 is never selected nor edited. Measured on SmolLM2's layer 15: the first
    # token's residual norm is ~120x any other's (an attention sink), so a small weight on it
    # mixes a large, entity-independent vector into every edited position
    sink: str = "exclude"
    # keep the hypernetwork's copy of the target's token embedding frozen (49,152 x 576 of SmolLM2's
    # 41M trainable weights): no gradient, no optimizer state for it
    freeze_embedding: bool = False
    # the official code's choices, each an option (`docs/running.md`, *The official options*)
    tie_attention: bool = False  # True: cross-attentions share the self-attention's projections
    rotation_map: str = "cayley"  # R's orthogonal map: cayley | householder (official) | matrix_exp
    subspace_head: str = "gelu"  # gelu (LayerNorm-Linear-GELU) | swiglu (official: RMSNorm + SwiGLU)
    head_width: int | None = None  # swiglu's width; None: the target's MLP width (official: Llama3-8B's)
    # the rotary selection's query position: "zero" | "instruction" (official: the instruction's length)
    selection_query: str = "zero"

    def __post_init__(self) -> None:
        check_ranges(
            self, non_negative=("n_blocks", "position_offsets"), at_least_one=("k", "selection_heads", "head_width")
        )
        for field, value, allowed in (
            ("init", self.init, INITS),
            ("subspace", self.subspace, KINDS),
            ("selection_positions", self.selection_positions, POSITIONS),
            ("sink", self.sink, SINK_RULES),
            ("base_read", self.base_read, BASE_READS),
            ("rotation_map", self.rotation_map, ROTATION_MAPS),
            ("subspace_head", self.subspace_head, HEADS),
            ("selection_query", self.selection_query, ("zero", "instruction")),
        ):
            if value not in allowed:
                raise ConfigError(f"HyperDASConfig.{field}={value!r}: use one of {allowed}")
        if self.selection_query != "zero" and self.selection_positions != "rotary":
            raise ConfigError(
                f"HyperDASConfig.selection_query={self.selection_query!r} rotates the rotary selection's query: "
                f"it needs selection_positions='rotary'"
            )
        if self.base_read == "entity" and self.include_suffix:
            raise ConfigError(
                "HyperDASConfig.base_read='entity' reads the base entity alone: include_suffix must be False"
            )
        if self.n_blocks < 0 or self.k < 1 or self.position_offsets < 0:
            raise ConfigError("HyperDASConfig: n_blocks and position_offsets must be >= 0 and k >= 1")


def instruction_text(row, template: str = DEFAULT_INSTRUCTION) -> str:
    try:
        return template.format(**row)
    except KeyError as err:
        raise ConfigError(f"instruction template {template!r} names {err.args[0]!r}, which the pairs lack") from None


def _right_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids.to(device), mask.to(device)


def length_groups(widths: list[int], min_saving: float = 0.15) -> list[list[int]]:
    """Row indices split in two groups by width (shortest first) where that pads at least
    `min_saving` fewer tokens than one batch; else one group. Each extra pass costs per-call
    overhead, so small savings are not worth it. Used on CPUs only, where time follows the tokens
    computed; on a GPU two smaller passes were slower (H200, Llama3-8B shapes, batch 16: a training
    step took 0.30 s grouped against 0.21 s in one pass)."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    one = max(widths) * len(widths)
    best, cut = one, None
    for split in range(1, len(order)):
        padded = widths[order[split - 1]] * split + widths[order[-1]] * (len(order) - split)
        if padded < best:
            best, cut = padded, split
    if cut is None or best > (1 - min_saving) * one:
        return [list(range(len(widths)))]
    return [order[:cut], order[cut:]]


@torch.no_grad()
def read_states(target, rows: list[list[int]], last_selectable: list[int], layer: int, whole: bool = False):
    """The target's view of right-padded `rows`: (layer-L states (B, T, D), selectable mask (B, T),
    normalised states of every layer at positions <= the last selectable flattened (B, S, D), their
    mask). Rows are run up to their last selectable token only (causal attention: later tokens
    change nothing before it), unless `whole`: then T covers the whole rows, so the layer-L states
    can start the edited run (`hyperdas.target.hooks.start_after`). On a CPU, rows of very different
    widths are run in two groups (`length_groups`), so the short ones are not padded to the
    longest; states at padded positions are zero."""
    widths = [len(r) if whole else last + 1 for r, last in zip(rows, last_selectable)]
    cut, width = max(last_selectable) + 1, max(widths)
    layer_l = flat = None
    groups = length_groups(widths) if target.device.type == "cpu" else [list(range(len(rows)))]
    for group in groups:
        part_layer, part_flat = _read_group(
            target, [rows[i] for i in group], [last_selectable[i] for i in group], layer, whole
        )
        if layer_l is None:
            layer_l = part_layer.new_zeros(len(rows), width, part_layer.shape[-1])
            flat = part_flat.new_zeros(len(rows), cut, *part_flat.shape[2:])
        index = torch.tensor(group, device=part_layer.device)
        layer_l[index, : part_layer.shape[1]] = part_layer
        flat[index, : part_flat.shape[1]] = part_flat
    last = torch.tensor(last_selectable, device=layer_l.device)
    lengths = torch.tensor([len(r) for r in rows], device=layer_l.device)
    positions = torch.arange(width, device=layer_l.device)[None]
    selectable = (positions <= last[:, None]) & (positions < lengths[:, None])
    n = flat.shape[2]
    flat_mask = selectable[:, :cut, None].expand(-1, -1, n).flatten(1)
    return layer_l, selectable, flat.flatten(1, 2), flat_mask


def _read_group(target, rows: list[list[int]], last_selectable: list[int], layer: int, whole: bool):
    """One read pass: (layer-L states (b, T, D), normalised states of every layer up to the last
    selectable position (b, cut, n+1, D))."""
    cut = max(last_selectable) + 1
    ids, mask = _right_pad([r if whole else r[:cut] for r in rows], target.tokenizer.pad_token_id or 0, target.device)
    out = target.model.get_decoder()(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True)
    states = torch.stack([h[:, :cut] for h in out.hidden_states], dim=2)  # (b, cut, n+1, D)
    return out.hidden_states[layer + 1], nn.functional.normalize(states.float(), dim=-1)


class HyperDAS(nn.Module):
    """Hypernetwork + selection head + subspace module; the frozen target stays outside."""

    def __init__(self, target, config: HyperDASConfig):
        super().__init__()
        check_layer(target.n_layers, config.layer)
        if config.k > target.hidden_size and config.subspace != "none":
            raise ConfigError(f"k={config.k} exceeds the hidden size {target.hidden_size} of {target.name}")
        self.config, self.target_name = config, target.name
        self.read_rule = read_rule(config, target.tokenizer)
        self.hypernetwork = HyperNetwork(
            target,
            config.n_blocks,
            config.source_ca,
            config.base_ca,
            config.init,
            config.ca_positions,
            config.tie_attention,
        )
        self.selection = SelectionHead(
            target.hidden_size,
            config.selection_heads,
            config.symmetric_features,
            config.position_offsets,
            config.selection_positions,
            float(getattr(target.model.config, "rope_theta", None) or 10000.0),
        )
        width = config.head_width or getattr(target.model.config, "intermediate_size", None)
        self.subspace = Subspace(
            config.subspace, target.hidden_size, config.k, config.rotation_map, config.subspace_head, width
        )
        if config.freeze_embedding:
            self.hypernetwork.embed.requires_grad_(False)

    def forward(self, instruction, base_view, source_view, mode: str = "soft", straight_through: bool = False):
        """`plan`: the part with every trainable weight, so a DDP wrapper sees it run."""
        return self.plan(instruction, base_view, source_view, mode, straight_through)

    def plan(self, instruction, base_view, source_view, mode: str = "soft", straight_through: bool = False):
        """(A (B, Ts+1, Tb), W (B, D, k) or None) for one batch; views come from `read_states`.
        The soft A is kept as `self.last_soft` (the sparsity penalty reads it whatever the mode);
        `straight_through`: a hard mode's A forward, the soft A's gradient backward."""
        if mode not in MODES:
            raise ValueError(f"unknown selection mode {mode!r}; use one of {MODES}")
        ids, mask = instruction
        base_l, base_sel, base_flat, base_flat_mask = base_view
        source_l, source_sel, source_flat, source_flat_mask = source_view
        dtype = next(self.hypernetwork.parameters()).dtype  # the target's (bf16 on a GPU)
        z = self.hypernetwork(ids, mask, source_flat.to(dtype), source_flat_mask, base_flat.to(dtype), base_flat_mask)
        # the selection head and subspace module are new weights, kept in float32 whatever the target's dtype
        z = z.float()
        self.last_z = z  # the instruction states, for inspection (e.g. Householder vectors)
        unit = lambda t: nn.functional.normalize(t.float(), dim=-1)  # noqa: E731
        if self.config.sink == "exclude":  # by measurement: the first token's state is a huge-norm sink
            base_sel, source_sel = base_sel.clone(), source_sel.clone()
            base_sel[:, 0] = source_sel[:, 0] = False
        if self.read_rule.first_selectable:  # the neutral prefix of an entity read
            base_sel = base_sel.clone()
            base_sel[:, : self.read_rule.first_selectable] = False
        # the official query position only where asked: a replaced head (the controls' fixed
        # selection) takes the five inputs alone
        query = (mask.long().sum(1),) if self.config.selection_query == "instruction" else ()
        A = self.selection(z, unit(base_l), base_sel, unit(source_l), source_sel, *query)
        self.last_soft = A
        return harden(A, mode, straight_through), self.subspace(z)

    def edit_for(
        self,
        target,
        layer: int,
        enc,
        index: list[int],
        rows: list[list[int]],
        offsets: list[int],
        mode: str = "soft",
        planner=None,
        store=None,
        straight_through: bool = False,
    ):
        """The residual edit for examples `index` laid out as `rows` after `offsets` pad tokens
        (see `hyperdas.target.evaluate.make_edit`); also kept as `self.last_plan` = (A, W) for inspection.
        `planner`: this model as an accelerator wrapped it (training under DDP); default: itself.
        `store`: an `ActivationStore` that replaces the read passes where it holds them.
        `straight_through`: train through a hard mode (see `plan`)."""
        if layer % target.n_layers != self.config.layer % target.n_layers:
            raise ValueError(f"this HyperDAS model intervenes after layer {self.config.layer}, not {layer}")
        if not enc.instructions:
            raise ValueError(
                "the encoded pairs carry no instructions: call hyperdas.hyper.model.add_instructions first"
            )
        rule, device = self.read_rule, target.device
        read_rows, base_last, shifts = rule.base_rows(enc, index)
        if rule.reads_prompt:  # the rows as laid out (generation reads its prompts only)
            read_rows = rows
        sources, source_last = rule.source_rows(enc, index)
        # right-padded prompt rows: the read pass can start the edited run
        whole = rule.reads_prompt and not any(offsets)
        if store is not None and store.enc is enc and store.read != rule:  # it would never serve: say so
            raise ValueError(
                f"the activation store was built for the {store.read.base!r} read, this model reads "
                f"{rule.base!r}: build it with the model's read_rule"
            )
        start = None  # the unedited layer-L states of `rows`, when known: the edited run starts there
        if store is not None and store.serves(enc, layer, rule, rows, index, offsets):
            base_view, source_view = store.views(index, device)
            start = store.starts(index, device)
        else:
            base_view = read_states(target, read_rows, base_last, layer, whole)
            source_view = read_states(target, sources, source_last, layer)
        instruction = _right_pad([enc.instructions[i] for i in index], target.tokenizer.pad_token_id or 0, device)
        A, W = (planner if planner is not None else self)(instruction, base_view, source_view, mode, straight_through)
        width = max(off + len(r) for off, r in zip(offsets, rows))
        if any(offsets) or any(shifts) or A.shape[2] != width:  # move each row's read columns to
            # where their tokens sit in the edited run, widening A from the read width to its width
            moved = torch.zeros(A.shape[0], A.shape[1], width, dtype=A.dtype, device=A.device)
            moved[:, -1] = 1
            for b, (off, shift, r) in enumerate(zip(offsets, shifts, rows)):
                lo, n = max(0, -shift), min(A.shape[2], len(r) - shift)  # read columns that land in the row
                if n > lo:  # the others are unselectable: keep base
                    moved[b, :, off + shift + lo : off + shift + n] = A[b, :, lo:n]
            A = moved
        self.last_plan = (A, W)
        source_states = source_view[0]

        def edit(hidden):
            if hidden.shape[1] != width:  # a cached decoding step: the prompt was edited already
                return hidden
            dtype = hidden.dtype
            return interchange(hidden, source_states.to(dtype), A.to(dtype), None if W is None else W.to(dtype))

        if whole:
            start = base_view[0]
        if start is not None:
            edit.start = start
        return edit


class Inference:
    """A HyperDAS model in one selection mode, usable wherever an evaluation method is expected."""

    def __init__(self, model: HyperDAS, mode: str = "soft", planner=None, store=None, straight_through: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown selection mode {mode!r}; use one of {MODES}")
        self.model, self.mode, self.planner, self.store = model, mode, planner, store
        self.straight_through = straight_through

    def edit_for(self, target, layer, enc, index, rows, offsets):
        return self.model.edit_for(
            target, layer, enc, index, rows, offsets, self.mode, self.planner, self.store, self.straight_through
        )


@torch.no_grad()
def selection_matrices(target, model: HyperDAS, enc, index: list[int], mode: str = "soft") -> list[torch.Tensor]:
    """Per example of `index`: its selection A (Ts+1, Tb), rows = the source tokens that were read
    (up to the last selectable one) then "keep base", columns = the base row's tokens."""
    _plan_only(target, model, enc, index, mode)
    A = model.last_plan[0].float().cpu()
    out = []
    for row, i in enumerate(index):
        ts, tb = min(len(enc.source[i]), A.shape[1] - 1), len(enc.base[i])
        out.append(torch.cat([A[row, :ts, :tb], A[row, -1:, :tb]]))
    return out


@torch.no_grad()
def householder_vectors(target, model: HyperDAS, enc, index: list[int]) -> torch.Tensor | None:
    """(n, D) the instruction-chosen Householder vectors of examples `index`; None unless the
    subspace module is "householder"."""
    if model.config.subspace != "householder":
        return None
    _plan_only(target, model, enc, index, "soft")
    return model.subspace.householder_vector(model.last_z).float().cpu()


def _plan_only(target, model: HyperDAS, enc, index: list[int], mode: str) -> None:
    """Read passes and plan for examples `index` (kept in `model.last_plan` / `last_z`); the edited
    run of the target, which inspection does not need, is not made."""
    model.edit_for(target, model.config.layer, enc, index, [enc.base[i] for i in index], [0] * len(index), mode)


def selection_record(tokenizer, enc, i: int, A: torch.Tensor, **fields) -> dict:
    """A saved selection matrix with its token labels (for heatmaps)."""
    tokens = tokenizer.convert_ids_to_tokens
    return {
        **fields,
        "example": i,
        "attribute_type": enc.records[i]["attribute_type"],
        "base_tokens": tokens(enc.base[i]),
        "source_tokens": tokens(enc.source[i][: A.shape[0] - 1]) + ["<keep base>"],
        "A": A.tolist(),
    }


def add_instructions(enc, tokenizer, rows, template: str = DEFAULT_INSTRUCTION):
    """Tokenize each pair's instruction into `enc.instructions` (same order as `rows`)."""
    enc.instructions = [tokenizer(instruction_text(row, template))["input_ids"] for row in rows]
    return enc
