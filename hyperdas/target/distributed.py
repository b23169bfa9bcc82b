"""Multi-process training on HF Accelerate: DDP (FSDP as an option), one frozen target per process.

Every process draws the same global batch (same seed) and takes its share: rank r the pairs
r, r + world, r + 2 world, ... A share may be cut further into micro-batches whose gradients
accumulate locally before the one synchronising backward (`micro_batch`). Each part's loss is its
pairs' summed weighted CE over the whole global batch's weight, times the process count (DDP
averages gradients), so a step equals the one-process step on the same global batch whatever the
process count and micro-batch size. Validation is split the same way and its per-example records
gathered, so every process computes the same metrics. Only the main process writes.

Launch (CPU processes talk over gloo; the `--multi_gpu` launcher is torchrun's, also on CPUs):
    accelerate launch --multi_gpu --num_processes 2 -m hyperdas.cli --config configs/cpu.yaml
A plain `python -m hyperdas.cli` is one process and uses no accelerate machinery at all.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext

import torch

from hyperdas.core.errors import HyperDASError


class DistributedError(HyperDASError, RuntimeError):
    """A multi-process set-up that cannot work; the message says why and what to change."""


def check_processes(world: int, device: str, available: int | None = None) -> None:
    """Refuse more processes than devices: GPUs for a CUDA run, CPU cores for a CPU run."""
    kind = torch.device(device).type
    if available is None:
        available = torch.cuda.device_count() if kind == "cuda" else (os.cpu_count() or 1)
    if world > available:
        what = "CUDA device(s)" if kind == "cuda" else "CPU core(s)"
        raise DistributedError(
            f"{world} processes were launched but this machine has {available} {what}: launch "
            f"at most {available} (accelerate launch --num_processes {available})"
        )


@dataclasses.dataclass
class Runtime:
    """This process's part in a run; `accelerator` None: a single process, plain PyTorch."""

    accelerator: object | None = None
    micro_batch: int | None = None

    @property
    def world(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: list[int]) -> list[int]:
        if len(index) < self.world:
            raise DistributedError(
                f"a global batch of {len(index)} pairs cannot be split over {self.world} "
                f"processes: raise the batch size or launch fewer processes"
            )
        return index[self.rank :: self.world]

    def chunks(self, local: list[int]) -> list[list[int]]:
        size = self.micro_batch or len(local)
        return [local[i : i + size] for i in range(0, len(local), size)]

    def prepare(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """(module as the accelerator wraps it, optimizer); unchanged in a single process."""
        if self.accelerator is None:
            return module, optimizer
        return self.accelerator.prepare(module, optimizer)

    def no_sync(self, wrapped, last: bool):
        """Accumulate this part's gradients locally unless it is the share's `last` part."""
        if self.accelerator is None or last:
            return nullcontext()
        return self.accelerator.no_sync(wrapped)

    def clip(self, module: torch.nn.Module, max_norm: float) -> float:
        """Clip the gradients' total norm to `max_norm`; returns the norm before clipping."""
        if self.accelerator is None:
            norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        else:
            norm = self.accelerator.clip_grad_norm_(module.parameters(), max_norm)
        return float(norm)

    def total(self, value: float) -> float:
        """The sum of `value` over the processes."""
        if self.accelerator is None:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def gather(self, items: list) -> list:
        """Every process's `items`, concatenated in rank order (on every process)."""
        if self.accelerator is None:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    @property
    def fsdp(self) -> bool:
        return self.accelerator is not None and str(self.accelerator.distributed_type).endswith("FSDP")

    def state_dict(self, wrapped, module: torch.nn.Module) -> dict:
        """The full weights of `module`; under FSDP gathered from the shards (every process must
        call this; the full dict is the main process's)."""
        if self.fsdp:
            return self.accelerator.get_state_dict(wrapped)
        return module.state_dict()


SINGLE = Runtime()


def runtime(device: str = "cpu", micro_batch: int | None = None, load_in_4bit: bool = False) -> Runtime:
    """This process's runtime: distributed when a launcher started several (WORLD_SIZE > 1), else
    a single plain process. DDP by default; FSDP when the launch asks for it (`accelerate launch
    --use_fsdp --fsdp_use_orig_params true ...`, or an accelerate config file): it shards the
    trainable module's weights, gradients and optimizer state over the GPUs (see README: limits)."""
    if micro_batch is not None and micro_batch < 1:
        raise DistributedError(f"micro_batch={micro_batch}: use a positive number of pairs, or None")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    if world <= 1:
        return Runtime(None, micro_batch)
    check_processes(int(os.environ.get("LOCAL_WORLD_SIZE", world)), device)  # this machine's processes
    cpu = torch.device(device).type == "cpu"
    if fsdp and (cpu or load_in_4bit):
        raise DistributedError(
            "FSDP shards over CUDA devices and a target in bf16/float32: "
            + ("on CPUs" if cpu else "with load_in_4bit")
            + " launch without --use_fsdp (DDP)"
        )
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs = {"cpu": cpu, "kwargs_handlers": [DistributedDataParallelKwargs(find_unused_parameters=True)]}
    return Runtime(Accelerator(**kwargs), micro_batch)


def launch_command(processes: int, program: list[str]) -> list[str]:
    """`accelerate launch` of `program` (["-m", "module", ...] or [script, ...]) on this machine's
    CPUs or GPUs, on a free port (runs may share the machine)."""
    import socket
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *program,
    ]


def local_device(device: str) -> str:
    """A bare "cuda" names this process's own GPU when a launcher started several processes."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def weighted_step(runtime: Runtime, wrapped, index: list[int], part_loss) -> float:
    """Backward of one global batch `index`, split over the processes and micro-batches
    (`hyperdas.target.distributed`); `part_loss(part)` is a part's loss already divided by the whole
    batch's normaliser. Returns the batch's loss (summed over the processes)."""
    parts = runtime.chunks(runtime.shard(index))
    local = 0.0
    for n, part in enumerate(parts):
        with runtime.no_sync(wrapped, last=n == len(parts) - 1):
            loss = part_loss(part)
            (loss * runtime.world).backward()  # DDP averages over the processes: undo it
        local += loss.item()
    return runtime.total(local)
