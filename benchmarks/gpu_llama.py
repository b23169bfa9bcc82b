"""The paper's setup on one GPU: step time, peak GPU memory and the memory estimate for a target with
Llama3-8B's architecture, loaded in bf16 and in 4-bit NF4 (issue 9).

The weights are random (Llama3-8B's shapes, random init; offline lent machines reach no hub): step
time and memory depend on the shapes, not on the values. The model is saved as a HF folder and
loaded through `hyperdas.target.models.load_target`, the same path the paper profiles use. For each
loading: one HyperDAS training step (layer 15, k=128, 8 copied blocks, batch 16, paper optimiser)
against one bare frozen forward+backward on the same rows, one MDAS step, peak allocated/reserved
GPU memory against `hyperdas.target.memory`'s estimate, and the losses of a few steps on one batch.
    python benchmarks/gpu_llama.py --rows rows.json --tokenizer FOLDER [--out results/gpu]
`--rows`: a JSON list of pair rows (as notebook 01 builds them); default: the embedded model's
training pairs under results/. Writes <out>/llama3-8b-random_<gpu>.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
from das_step import bare_step, das_step  # noqa: E402  same folder

from hyperdas.core.results import environment, write_json
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step
from hyperdas.target.evaluate import encode, source_vectors
from hyperdas.target.memory import GIB, estimate_for
from hyperdas.target.models import load_target

LLAMA3_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
    rope_theta=500000.0,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


def random_llama_folder(folder: Path, tokenizer_folder: str, shapes: dict, device: str) -> Path:
    """A randomly initialised Llama with `shapes`, built on `device` in bf16 and saved as a HF folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    config = LlamaConfig(**shapes, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    _free(device)
    return folder


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> list[float]:
    out = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - start)
    return out


def _allocated(device: str) -> int:
    """Bytes held now: allocated GPU memory, or the resident set on a CPU (dry runs)."""
    from hyperdas.target.memory import in_use

    return in_use(torch.device(device))


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _peaks(device: str) -> tuple[int, int]:
    """(peak allocated, peak reserved) since the last reset; a CPU gives its peak resident set twice."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak, peak


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure(folder: Path, rows: list[dict], four_bit: bool, checkpoint: bool, args) -> dict:
    """One run: `args` carries layer, k, n_blocks, batch_size, repeats and device."""
    device = args.device
    torch.manual_seed(0)
    start = time.perf_counter()
    target = load_target(str(folder), dtype="bfloat16", device=device, load_in_4bit=four_bit)
    load_seconds = time.perf_counter() - start
    loaded = _allocated(device)
    config = HyperDASConfig(layer=args.layer, k=args.k, n_blocks=args.n_blocks)
    train = HyperTrainConfig(batch_size=args.batch_size, lr=4e-5, lr_rotation=1e-3, checkpoint_target=checkpoint)
    enc = encoded_pairs(target, rows[: args.batch_size])
    predicted = estimate_for(target, config, enc, args.batch_size, checkpoint)
    print(predicted.describe(), flush=True)
    _reset_peak(device)
    model = HyperDAS(target, config).to(target.device).train()
    optimizer = make_optimizer(model, train)
    built, build_peak = _allocated(device), _peaks(device)[0]  # where building the hypernetwork peaks
    weights = example_weights(enc, train)
    index = list(range(len(enc)))
    losses = []
    run_hyper = lambda: losses.append(train_step(target, model, enc, index, weights, optimizer, train, 1)["loss"])  # noqa: E731, F821 (names deleted later, after the last call)
    run_bare = lambda: bare_step(target, args.layer, enc, index)  # noqa: E731, F821
    run_hyper()
    first_step_peak = _peaks(device)[0]
    _reset_peak(device)
    run_hyper()
    step_peak = _peaks(device)[0]  # a later step: the AdamW moments exist from the first one
    after_step = _allocated(device)
    run_bare()
    hyper, bare = [], []
    for _ in range(args.repeats):
        hyper += timed(run_hyper, 1, device)
        bare += timed(run_bare, 1, device)
    later_peak, peak_reserved = _peaks(device)  # reserved memory is only freed by empty_cache: the run's peak
    peak_allocated = max(build_peak, first_step_peak, later_peak)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model, optimizer
    _free(device)

    das_enc = encode(target.tokenizer, rows[: args.batch_size])
    sources = source_vectors(target, args.layer, das_enc)
    intervention = RotatedSpaceInterchange(target.hidden_size, args.k).to(target.device)
    das_optimizer = torch.optim.AdamW(intervention.parameters(), lr=1e-4)
    run_das = lambda: das_step(target, args.layer, das_enc, index, sources, intervention, das_optimizer)  # noqa: E731, F821
    run_das()
    das = timed(run_das, args.repeats, device)
    lengths = [len(enc.base[i]) for i in index]
    result = {
        "load_in_4bit": four_bit,
        "checkpoint_target": checkpoint,
        "load_seconds": load_seconds,
        "config": config.to_dict(),
        "batch_size": len(index),
        "trainable_parameters": trainable,
        "base_tokens": {"min": min(lengths), "max": max(lengths)},
        "target_weights_gib": predicted.target_weights / GIB,
        "allocated_after_load_gib": loaded / GIB,
        "hyperdas_step_seconds": {"median": statistics.median(hyper), "all": hyper},
        "bare_forward_backward_seconds": {"median": statistics.median(bare), "all": bare},
        "ratio": statistics.median(hyper) / statistics.median(bare),
        "mdas_step_seconds": {"median": statistics.median(das), "all": das},
        "losses_same_batch": losses,
        "peak_allocated_gib": peak_allocated / GIB,
        "peak_reserved_gib": peak_reserved / GIB,
        "allocated_after_build_gib": built / GIB,
        "build_peak_gib": build_peak / GIB,
        "first_step_peak_gib": first_step_peak / GIB,
        "second_step_peak_gib": step_peak / GIB,
        "allocated_between_steps_gib": after_step / GIB,
        "memory_estimate_gib": predicted.total / GIB,
        "memory_estimate": predicted.describe(),
    }
    result["estimate_over_peak_allocated"] = predicted.total / peak_allocated
    result["estimate_over_peak_reserved"] = predicted.total / peak_reserved
    del target, intervention, das_optimizer, sources
    _free(device)
    return result


def default_rows(results: Path) -> list[dict]:
    from hyperdas.data.dataset import load_pairs, pairs_dir

    return [dict(r) for r in load_pairs(pairs_dir(results, "smollm2-135m"))["train"].select(range(64))]


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default=None)
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded model's)")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--n-blocks", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--runs",
        default="bf16,bf16+checkpoint,4bit+checkpoint",
        help="comma list of bf16|4bit[+checkpoint][:n_blocks[:batch_size]]",
    )
    parser.add_argument("--tag", default="", help="suffix of the output file's name")
    parser.add_argument("--shapes", default=None, help="JSON overriding Llama3-8B's shapes (tests: tiny ones)")
    parser.add_argument("--out", default=str(repo / "results" / "gpu"))
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself (tiny --shapes)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_llama.py measures a GPU and none is visible (torch.cuda.is_available() is False)")
    rows = json.loads(Path(args.rows).read_text()) if args.rows else default_rows(repo / "results")
    if args.tokenizer is None:
        from hyperdas.target.models import embedded_folder

        args.tokenizer = str(embedded_folder("smollm2-135m"))
    shapes = {**LLAMA3_8B, **json.loads(args.shapes or "{}")}
    cuda = args.device.startswith("cuda")
    gpu = torch.cuda.get_device_name() if cuda else "cpu"
    report = {
        "what": "Llama3-8B architecture, random weights",
        "shapes": shapes,
        "device": gpu,
        "device_memory_gib": torch.cuda.get_device_properties(0).total_memory / GIB if cuda else None,
        "environment": environment(),
        "runs": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="llama-random-"))
    try:
        start = time.perf_counter()
        folder = random_llama_folder(workdir / "llama3-8b-random", args.tokenizer, shapes, args.device)
        report["build_and_save_seconds"] = time.perf_counter() - start
        for run in args.runs.split(","):
            print(f"== {run}", flush=True)
            kind, *sizes = run.split(":")
            sized = argparse.Namespace(**{**vars(args), **dict(zip(("n_blocks", "batch_size"), map(int, sizes)))})
            try:  # one failing run (say, 4-bit without bitsandbytes CUDA) must not lose the others
                report["runs"][run] = measure(folder, rows, "4bit" in kind, "checkpoint" in kind, sized)
            except Exception as err:  # noqa: BLE001  recorded, with its traceback, in the report
                report["runs"][run] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
                _free(args.device)
            print(
                json.dumps({k: v for k, v in report["runs"][run].items() if not k.endswith("_seconds")}, indent=1),
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    name = gpu.replace("NVIDIA ", "").replace(" ", "-").lower()
    path = write_json(Path(args.out) / f"llama3-8b-random_{name}{'_' + args.tag if args.tag else ''}.json", report)
    print("wrote", path)


if __name__ == "__main__":
    main()
