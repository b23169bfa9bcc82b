"""Read and edit the residual stream after a decoder layer, through self-cleaning hooks.

"The residual stream after layer L" is the output of decoder block L (0-based): the hidden
state the next block reads. Decoder blocks return a bare tensor in recent transformers and a
tuple ``(hidden, ...)`` in older ones; both are handled.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from hyperdas.core.errors import HyperDASError
from hyperdas.target.models import Target, decoder_layers

EditFn = Callable[[torch.Tensor], torch.Tensor]


class LayerIndexError(HyperDASError, IndexError):
    """A layer index outside the model's decoder blocks."""


def _layers(model: torch.nn.Module | Target) -> torch.nn.ModuleList:
    return decoder_layers(model.model if isinstance(model, Target) else model)


def check_layer(n_layers: int, layer: int) -> int:
    """Normalise a (possibly negative) layer index; reject one out of range by name."""
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise LayerIndexError(f"layer must be an int, got {layer!r}")
    if not -n_layers <= layer < n_layers:
        raise LayerIndexError(
            f"layer {layer} is out of range: the model has {n_layers} decoder layers "
            f"(valid 0..{n_layers - 1}, or -{n_layers}..-1 from the end)"
        )
    return layer % n_layers


def _hidden_of(output):
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def _forward_hooks(modules_and_hooks) -> Iterator[None]:
    handles = []
    try:
        for module, hook in modules_and_hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_residual(
    model: torch.nn.Module | Target, layers: int | Sequence[int], detach: bool = True
) -> Iterator[dict[int, torch.Tensor]]:
    """Record the residual stream after each of `layers` at every position.

    Yields a dict filled during the forward pass: ``{layer: (batch, seq, hidden)}``; a second
    forward pass inside the block overwrites it. With ``detach=False`` the recorded tensors keep
    their graph (for gradients to the residual stream).
    """
    blocks = _layers(model)
    single = isinstance(layers, int)
    wanted = [check_layer(len(blocks), layer) for layer in ([layers] if single else layers)]
    store: dict[int, torch.Tensor] = {}

    def make_hook(index: int):
        def hook(module, args, output):
            hidden = _hidden_of(output)
            store[index] = hidden.detach() if detach else hidden

        return hook

    with _forward_hooks([(blocks[i], make_hook(i)) for i in wanted]):
        yield store


@contextmanager
def edit_residual(model: torch.nn.Module | Target, layer: int, fn: EditFn) -> Iterator[None]:
    """Replace the residual stream after `layer` by ``fn(hidden)`` (same shape) in every forward."""
    blocks = _layers(model)
    index = check_layer(len(blocks), layer)

    def hook(module, args, output):
        hidden = _hidden_of(output)
        new = fn(hidden)
        if new.shape != hidden.shape:
            raise ValueError(f"edit at layer {index} returned shape {tuple(new.shape)}, expected {tuple(hidden.shape)}")
        return _with_hidden(output, new)

    with _forward_hooks([(blocks[index], hook)]):
        yield


def _as_batch_positions(positions: torch.Tensor | Sequence, batch: int, device) -> torch.Tensor:
    pos = torch.as_tensor(positions, dtype=torch.long, device=device)
    if pos.dim() == 0:
        pos = pos.expand(batch)
    if pos.dim() == 1:
        pos = pos[:, None]
    if pos.shape[0] != batch:
        raise ValueError(f"positions are given for {pos.shape[0]} examples, the batch has {batch}")
    return pos


def replace_at(hidden: torch.Tensor, positions, values: torch.Tensor) -> torch.Tensor:
    """A copy of `hidden` (B, T, D) with ``hidden[b, positions[b, p]] = values[b, p]``.

    positions: int, (B,) or (B, P); values: (B, D) or (B, P, D). Differentiable in both inputs.
    """
    batch, length, _ = hidden.shape
    pos = _as_batch_positions(positions, batch, hidden.device)
    if pos.min() < -length or pos.max() >= length:
        raise IndexError(f"position(s) {pos.tolist()} outside sequence length {length}")
    vals = values if values.dim() == 3 else values[:, None, :]
    if vals.shape[:2] != pos.shape:
        raise ValueError(f"values of shape {tuple(values.shape)} do not match positions {tuple(pos.shape)}")
    rows = torch.arange(batch, device=hidden.device)[:, None].expand_as(pos)
    out = hidden.clone()
    out[rows, pos % length] = vals.to(hidden.dtype)
    return out


@contextmanager
def patch_residual(model: torch.nn.Module | Target, layer: int, positions, values: torch.Tensor) -> Iterator[None]:
    """Overwrite the residual stream after `layer` at `positions` with `values` (see replace_at).

    During cached generation the later one-token steps are left untouched: the patched prompt
    already lives in the key/value cache.
    """

    seen_prompt = False

    def fn(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal seen_prompt
        if hidden.shape[1] == 1 and seen_prompt:  # a decoding step after the prompt
            return hidden
        seen_prompt = seen_prompt or hidden.shape[1] > 1
        return replace_at(hidden, positions, values)

    with edit_residual(model, layer, fn):
        yield


def _returns_tuple(block: torch.nn.Module) -> bool | None:
    """Whether a decoder block returns ``(hidden, ...)`` (older transformers) or a bare tensor: read
    from its forward's return statements (annotations can be stale: Gemma 3's says tuple in
    transformers 5 and returns the tensor), else from its return annotation; None when neither says."""
    forward = type(block).forward
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(forward)))
        returned = [node.value for node in ast.walk(tree) if isinstance(node, ast.Return) and node.value is not None]
    except (OSError, TypeError, SyntaxError):
        returned = []
    if returned and all(isinstance(v, ast.Tuple) for v in returned):
        return True
    if returned and all(isinstance(v, ast.Name) and v.id == "hidden_states" for v in returned):
        return False
    annotation = inspect.signature(forward).return_annotation
    if annotation is inspect.Signature.empty:
        return None
    return "tuple" in str(annotation).lower()


class _Skipped(torch.nn.Module):
    """Stands in for a decoder block below the start layer: passes the residual stream through,
    or (the start layer itself) returns the given one."""

    def __init__(self, block: torch.nn.Module, value: torch.Tensor | None, as_tuple: bool):
        super().__init__()
        self.value, self.as_tuple = value, as_tuple
        if hasattr(block, "attention_type"):  # some decoders pick each block's mask by it
            self.attention_type = block.attention_type

    def forward(self, *args, **kwargs):
        hidden = self.value if self.value is not None else (args[0] if args else kwargs["hidden_states"])
        return (hidden,) if self.as_tuple else hidden


def can_start_after(model: torch.nn.Module | Target) -> bool:
    return _returns_tuple(_layers(model)[0]) is not None


@contextmanager
def start_after(model: torch.nn.Module | Target, layer: int, hidden: torch.Tensor) -> Iterator[None]:
    """Forward passes inside the block skip decoder blocks 0..`layer` and continue from `hidden`,
    the residual stream after `layer` (computed earlier, e.g. by a read pass over the same padded
    rows): the blocks below stand aside, block `layer` returns `hidden`. Restored on exit."""
    blocks = _layers(model)
    index = check_layer(len(blocks), layer)
    as_tuple = _returns_tuple(blocks[index])
    if as_tuple is None:
        raise TypeError(f"{type(blocks[index]).__name__}.forward does not annotate what it returns")
    saved = [blocks[i] for i in range(index + 1)]
    try:
        for i, block in enumerate(saved):
            blocks[i] = _Skipped(block, hidden if i == index else None, as_tuple)
        yield
    finally:
        for i, block in enumerate(saved):
            blocks[i] = block


@contextmanager
def checkpointed(model: torch.nn.Module | Target, first: int) -> Iterator[None]:
    """Gradient checkpointing for decoder blocks `first`.. of a frozen model inside the block: each
    keeps only its input for backward and recomputes its activations then (less memory, one more
    forward of those blocks). transformers' own switch only acts in training mode, and the target
    stays in eval mode. Forward passes without gradients are unchanged. Restored on exit."""
    from torch.utils.checkpoint import checkpoint

    blocks = _layers(model)
    start = check_layer(len(blocks), first) if first < len(blocks) else len(blocks)
    patched = list(blocks)[start:]

    def wrap(forward):
        def run(*args, **kwargs):
            # a key/value cache would be written twice (forward and recomputation): run those plainly
            cached = any(kwargs.get(k) is not None for k in ("past_key_values", "past_key_value"))
            if not torch.is_grad_enabled() or cached:
                return forward(*args, **kwargs)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)

        return run

    try:
        for block in patched:
            block.forward = wrap(block.forward)
        yield
    finally:
        for block in patched:
            del block.forward  # the instance attribute: the class's forward shows through again
