"""How much memory HyperDAS (and DAS/MDAS) training will take, printed before training and checked
against the device, so a run that cannot fit stops with a message instead of an out-of-memory crash
hours in.

estimate = what the process holds now (the loaded target, the runtime; measured: resident set on
a CPU, allocated memory on a GPU) + what training adds: the hypernetwork's weights, gradients and
the two AdamW moments, the read passes' hidden states of every layer (kept for the hypernetwork's
cross-attention, plus their normalised copies), the hypernetwork's cross-attention keys/values and
probabilities, and the activations the edited pass keeps for backward in the blocks above the
intervened layer. The activation terms are per-token counts of the tensors those steps keep; they
are an estimate, measured against the peak in `benchmarks/hyperdas_step.py`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from hyperdas.core.errors import ResourceError

GIB = 1024**3
# what training adds, times these, by device type: (the hypernetwork's weights, gradients and AdamW
# moments; the activations), for allocator caching and fragmentation and backward's transient
# buffers. CPU (glibc malloc, 2 cores): SmolLM2, batch 16, 2 blocks, the peak RSS was 1.32x the
# counted tensors (benchmarks/hyperdas_step.py). CUDA (H200, benchmarks/gpu_llama.py, results/gpu/):
# with a Llama3-8B-shaped target the weight state is a few large exact allocations, and the counted
# activations overstate what is alive at the peak, so 1.0 and 1.1 (fitted on the runs of
# llama3-8b-random_h200_phases.json and _independent.json)
OVERHEAD = {"cpu": (1.3, 1.3), "cuda": (1.0, 1.1)}


def _numel(module) -> int:
    """Parameters as the hypernetwork will hold them: a 4-bit linear (packed two weights a byte)
    counts its de-quantised in x out weights."""
    total = 0
    for m in module.modules():
        if getattr(getattr(m, "weight", None), "quant_state", None) is not None:
            total += m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0)
        else:
            total += sum(p.numel() for p in m.parameters(recurse=False))
    return total


def hypernetwork_parameters(target, config) -> int:
    """Trainable parameters of `HyperDAS(target, config)`, counted without building it."""
    D, k = target.hidden_size, config.k
    model = target.model
    total = _numel(model.get_input_embeddings()) + _numel(model.get_decoder().norm)
    for block in target.layers[: config.n_blocks]:
        attention = _numel(block.self_attn)
        n_ca = int(config.source_ca) + int(config.base_ca)
        total += _numel(block) + n_ca * (attention + _numel(block.input_layernorm))
    total += 2 * D * D + D + 2 * (D * D + D)  # selection head: pair, query, key
    total += 2 * config.position_offsets * D  # its offset features (base and source)
    if config.subspace != "none":
        total += D * k  # the shared rotation R
    if config.subspace == "householder":
        total += 2 * D + 2 * (D * D + D)  # LayerNorm + two Linear layers
    elif config.subspace == "mask":
        total += 2 * D + D * D + D + D * k + k
    return total


def in_use(device: torch.device) -> int:
    """Bytes this process holds now: allocated GPU memory, or the resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def available(device: torch.device) -> int | None:
    """Bytes the device can still give: free GPU memory, or the machine's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    in_use: int  # measured now: the loaded target (target_weights of it) and the runtime
    target_weights: int
    hypernetwork: int  # weights + gradients + AdamW moments
    read_states: int
    hypernetwork_activations: int
    edited_pass: int
    device: str
    activation_store: int = 0  # an in-memory store of the read passes in the same memory (a CPU run)

    @property
    def activations(self) -> int:
        return self.read_states + self.hypernetwork_activations + self.edited_pass

    @property
    def counted(self) -> int:
        return self.hypernetwork + self.activations

    @property
    def overhead(self) -> tuple[float, float]:
        """(on the hypernetwork's weight state, on the activations); an unknown device type: the CPU's."""
        return OVERHEAD.get(torch.device(self.device).type, OVERHEAD["cpu"])

    @property
    def added(self) -> int:
        state, activations = self.overhead
        return int(self.hypernetwork * state + self.activations * activations) + self.activation_store

    @property
    def total(self) -> int:
        return self.in_use + self.added

    def describe(self) -> str:
        parts = ", ".join(
            f"{name.replace('_', ' ')} {getattr(self, name) / GIB:.2f}"
            for name in (
                "in_use",
                "target_weights",
                "hypernetwork",
                "read_states",
                "hypernetwork_activations",
                "edited_pass",
                "activation_store",
            )
            if name != "activation_store" or self.activation_store
        )
        state, activations = self.overhead
        return (
            f"memory estimate on {self.device}: {self.total / GIB:.2f} GiB ({parts} GiB; overhead x{state} on the "
            f"hypernetwork, x{activations} on the activations)"
        )


def _shape(target) -> tuple[int, int, int, int, int]:
    """(hidden size, layers, attention heads, MLP width, bytes per activation value)."""
    c = target.model.config
    dtype_bytes = next(target.model.parameters()).element_size()
    dtype_bytes = 2 if dtype_bytes < 2 else dtype_bytes  # 4-bit targets compute in bf16
    return (
        target.hidden_size,
        target.n_layers,
        c.num_attention_heads,
        getattr(c, "intermediate_size", 4 * target.hidden_size),
        dtype_bytes,
    )


def _edited_pass(target, layer: int, B: int, T: int, checkpoint_target: bool = False) -> int:
    """What the edited pass keeps for backward: the blocks above the intervened layer run with gradients."""
    D, n, heads, inter, dtype_bytes = _shape(target)
    upper = n - 1 - layer % n
    per_block = B * T * (10 * D + 4 * inter + 2 * heads * T) * dtype_bytes
    if checkpoint_target and upper > 0:
        return upper * B * T * D * dtype_bytes + per_block + 3 * B * T * D * dtype_bytes
    return upper * per_block + 3 * B * T * D * dtype_bytes


def estimate(
    target,
    config,
    batch_size: int,
    base_tokens: int,
    source_tokens: int,
    instruction_tokens: int = 16,
    checkpoint_target: bool = False,
) -> MemoryEstimate:
    """Peak memory of one HyperDAS training step on `target` (see module doc); token counts are the
    longest rows of a batch. `checkpoint_target`: the blocks above the layer keep only their inputs
    (plus one block's activations during its recomputation)."""
    D, n, heads, inter, dtype_bytes = _shape(target)
    kv_dim = D // heads * (getattr(target.model.config, "num_key_value_heads", None) or heads)
    B, T, S_tokens = batch_size, base_tokens, source_tokens
    params = hypernetwork_parameters(target, config)
    # every layer's states of both rows: the output tuple, their stacked copy, the normalised float copy
    read = (n + 1) * B * (T + S_tokens) * D * (2 * dtype_bytes + 4)
    S = (n + 1) * (T + S_tokens)  # cross-attended positions of base and source together
    n_ca = int(config.source_ca) + int(config.base_ca)
    # per cross-attention: the gathered allowed states (kept for the k/v weight gradients), the k/v
    # projections, the attention probabilities; then the blocks' own layers over the instruction
    hyper_acts = (
        config.n_blocks * n_ca * B * S // 2 * (D + 2 * kv_dim + heads * instruction_tokens) * dtype_bytes
        + config.n_blocks * B * instruction_tokens * (10 * D + 4 * inter) * dtype_bytes
    )
    edited = _edited_pass(target, config.layer, B, T, checkpoint_target)
    weights = sum(p.numel() * p.element_size() for p in target.model.parameters())
    return MemoryEstimate(
        in_use=in_use(target.device),
        target_weights=weights,
        hypernetwork=4 * params * dtype_bytes,
        read_states=read,
        hypernetwork_activations=hyper_acts,
        edited_pass=edited,
        device=str(target.device),
    )


def estimate_for(target, config, enc, batch_size: int, checkpoint_target: bool = False) -> MemoryEstimate:
    """`estimate` for batches of encoded pairs `enc` (their longest rows)."""
    longest = lambda rows: max(len(r) for r in rows)  # noqa: E731
    return estimate(
        target,
        config,
        min(batch_size, len(enc)),
        longest(enc.base),
        longest(enc.source),
        longest(enc.instructions),
        checkpoint_target,
    )


def estimate_das(target, layer: int, k: int, batch_size: int, base_tokens: int, source_tokens: int) -> MemoryEstimate:
    """Peak memory of one DAS/MDAS step: the rotation (float32 weights, gradients, AdamW moments), the
    source vectors read at the layer, and the edited pass above it."""
    D, dtype_bytes = target.hidden_size, _shape(target)[4]
    return MemoryEstimate(
        in_use=in_use(target.device),
        target_weights=sum(p.numel() * p.element_size() for p in target.model.parameters()),
        hypernetwork=4 * D * k * 4,
        read_states=batch_size * source_tokens * D * dtype_bytes,
        hypernetwork_activations=0,
        edited_pass=_edited_pass(target, layer, batch_size, base_tokens),
        device=str(target.device),
    )


def check_fits(
    found: MemoryEstimate,
    free: int | None = None,
    device: torch.device | None = None,
    what: str = "HyperDAS training",
    fix: str = "lower hyper_batch_size or n_blocks, or load the target in 4-bit (load_in_4bit=True)",
) -> None:
    """Refuse (ResourceError, a MemoryError) when what training adds exceeds what the device can still give."""
    free = free if free is not None else available(device or torch.device(found.device))
    if free is not None and found.added > free:
        raise ResourceError(
            f"{what} needs about {found.added / GIB:.1f} GiB more but {found.device} has "
            f"{free / GIB:.1f} GiB free ({found.describe()}): {fix}"
        )
