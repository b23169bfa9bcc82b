"""Training HyperDAS: weighted cross-entropy + scheduled sparsity penalty, resumable, logged.

One model serves every attribute of the dataset. Loss: teacher-forced CE on the first <= 3
answer tokens, causal rows weighted 3.5 and isolate rows 0.5 (official), plus the selection's
sparsity penalty, off for the first half of training, then rising linearly 0.15 -> 1.5, and (ours,
weight 0.1; 0 in the paper) each base column's selection entropy. AdamW
with its own learning rate for the shared rotation R; gradient clipping. Every `eval_every` steps
the val pairs are scored in each inference mode through `hyperdas.target.evaluate.evaluate`; the step
with the best Disentangle in the trained selection's mode is kept (`ranked_scores`). A JSONL log (one
line per step) feeds the convergence figure.
Checkpoints hold the trainable weights only (safetensors) plus both configs; `resume.pt` adds the
optimizer and RNG state so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.core.config import ConfigError, FrozenConfig, check_ranges
from hyperdas.core.errors import CheckpointError, TrainingDiverged
from hyperdas.core.files import (
    append_line,
    atomic_paths,
    check_checksums,
    checked_path,
    file_checksums,
    one_writer,
    read_checked,
    read_or_explain,
    write_text,
)
from hyperdas.core.metrics import MAX_ANSWER_TOKENS
from hyperdas.data.ravel import RavelDataError
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS, TRAIN_BEFORE_FIELDS
from hyperdas.hyper.model import DEFAULT_INSTRUCTION, HyperDAS, HyperDASConfig, Inference, add_instructions
from hyperdas.hyper.reads import read_rule
from hyperdas.hyper.selection import MODES, column_entropy, sparsity_penalty
from hyperdas.hyper.store import DTYPES as STORE_DTYPES
from hyperdas.hyper.store import KINDS as STORE_KINDS
from hyperdas.hyper.store import ActivationStore, default_limit, store_bytes
from hyperdas.target.distributed import SINGLE, Runtime, weighted_step
from hyperdas.target.evaluate import check_rows, encode, evaluate_sharded, intervened_logits
from hyperdas.target.hooks import check_layer, checkpointed
from hyperdas.target.memory import check_fits, estimate_for
from hyperdas.target.provenance import check_provenance, provenance

WEIGHTS, CONFIG, RESUME, LOG = "hyperdas.safetensors", "config.json", "resume.pt", "train_log.jsonl"
LR_SCHEDULES = ("constant", "linear")


SAMPLINGS = ("uniform", "balanced")


@dataclasses.dataclass(frozen=True)
class HyperTrainConfig(FrozenConfig):
    # the CPU defaults of the embedded model; notebook 03 repeats them (600 steps: ~4.8 epochs of 2,000 pairs)
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4  # hypernetwork, selection head, subspace head
    lr_rotation: float = 1e-3  # the shared R
    weight_decay: float = 0.01
    clip: float = 4.0
    causal_weight: float = 3.5
    iso_weight: float = 0.5
    sparsity_start: float = 0.5  # fraction of the steps before the penalty starts (1: never)
    sparsity_from: float = 0.15
    sparsity_to: float = 1.5
    temperature_from: float = 50.0  # the mask subspace's sigmoid temperature, annealed
    temperature_to: float = 0.1
    eval_every: int = 100
    max_val_pairs: int | None = 60
    eval_modes: tuple[str, ...] = MODES
    seed: int = 0
    checkpoint_target: bool = False  # gradient checkpointing of the target's blocks above the layer
    # the selection the training forward uses: a hard mode with the soft gradient (straight-through), or
    # soft. one_to_one trains the headline mode to edit (CHANGELOG.md)
    train_selection: str = "one_to_one"
    lr_schedule: str = "constant"  # "constant" (the paper's); "linear": both learning rates fall linearly toward 0
    # fraction of the steps trained with the soft selection before `train_selection` takes over
    soft_warmup: float = 0.0
    # weight of each base column's selection entropy in the loss: sharpens A toward the hard selection
    # trained (CHANGELOG.md); 0: the paper's loss
    selection_entropy: float = 0.1
    # the frozen target's read passes, computed once (`hyperdas.hyper.store`): auto | none | memory | disk;
    # auto: in memory on a CPU when it fits its limit, else none (not measured on a GPU: ask for it there)
    activation_store: str = "auto"
    store_dtype: str = "auto"  # auto (the hypernetwork's dtype: exact) | float32 | float16 | bfloat16
    store_max_gib: float | None = None  # None: half the available memory / the free disk less 1 GiB
    # steps whose weights are also kept, under <out_dir>/snapshots/step-<N> (a budget ladder from one
    # run: each scored on val as it trains, on test afterwards); multiples of eval_every, at most steps
    snapshot_steps: tuple[int, ...] = ()
    # answer tokens in the training loss: this package's first 3 (what scoring reads), or None: all of
    # them, the official loss (a mean over every answer token of the batch)
    answer_tokens: int | None = MAX_ANSWER_TOKENS
    # how a batch is drawn: "uniform" over the training rows (the official code); "balanced": each place
    # to a (domain, instructed attribute) group drawn uniformly (one HyperDAS over several domains)
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        check_ranges(
            self,
            # a learning rate of 0 is allowed: it freezes (e.g. to compare gradients)
            positive=("clip", "store_max_gib"),
            non_negative=("lr", "lr_rotation", "steps", "weight_decay", "causal_weight", "iso_weight")
            + ("sparsity_from", "sparsity_to", "selection_entropy"),
            at_least_one=("batch_size", "eval_every", "max_val_pairs", "answer_tokens"),
        )
        unknown = [m for m in self.eval_modes if m not in MODES]
        if unknown:
            raise ConfigError(f"HyperTrainConfig.eval_modes: unknown mode(s) {unknown}; use {MODES}")
        for field, value, allowed in (
            ("train_selection", self.train_selection, MODES),
            ("activation_store", self.activation_store, ("auto", *STORE_KINDS)),
            ("store_dtype", self.store_dtype, tuple(STORE_DTYPES)),
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ("sampling", self.sampling, SAMPLINGS),
        ):
            if value not in allowed:
                raise ConfigError(f"HyperTrainConfig.{field}={value!r}: use one of {allowed}")
        for field in ("soft_warmup", "sparsity_start"):
            value = getattr(self, field)
            if not 0 <= value <= 1:
                raise ConfigError(f"HyperTrainConfig.{field}={value!r}: a fraction of the steps, in [0, 1]")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("HyperTrainConfig: steps >= 0, batch_size >= 1 and eval_every >= 1 are required")
        object.__setattr__(self, "snapshot_steps", tuple(self.snapshot_steps))
        wrong = [
            n
            for n in self.snapshot_steps
            if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > self.steps or n % self.eval_every
        ]
        if wrong or len(set(self.snapshot_steps)) != len(self.snapshot_steps):
            raise ConfigError(
                f"HyperTrainConfig.snapshot_steps={list(self.snapshot_steps)}: each a distinct multiple of "
                f"eval_every={self.eval_every} (where val is scored) and at most steps={self.steps}; wrong: {wrong}"
            )

    def sparsity_weight(self, step: int) -> float:
        start = self.sparsity_start * self.steps
        if step <= start or self.steps <= start:
            return 0.0
        return self.sparsity_from + (self.sparsity_to - self.sparsity_from) * (step - start) / (self.steps - start)

    def selection_at(self, step: int) -> str:
        """The selection training uses at `step`: soft during the warm-up, then `train_selection`."""
        return "soft" if step <= self.soft_warmup * self.steps else self.train_selection

    def lr_factor(self, step: int) -> float:
        """The learning rates' multiplier at `step` (1..steps)."""
        if self.lr_schedule == "constant":
            return 1.0
        return max(0.0, 1 - (step - 1) / max(self.steps, 1))

    def temperature(self, step: int) -> float:
        return self.temperature_from + (self.temperature_to - self.temperature_from) * step / max(self.steps, 1)


def snapshot_folder(out_dir: str | Path, step: int) -> Path:
    """Where a run keeps its weights at `step` of `HyperTrainConfig.snapshot_steps`."""
    return Path(out_dir) / "snapshots" / f"step-{step}"


def checkpoint_folder(out_dir: str | Path, layer: int, seed: int | None = None, group: str | None = None) -> Path:
    """Where notebook 03 keeps its model for `layer` (and notebook 04 finds it): one per layer; the
    runs of further seeds (`seed`) beside it; with several domains, one per `group` (a domain, or
    "all" for one HyperDAS over every domain)."""
    name = f"hyperdas-layer{layer}" + (f"-{group}" if group else "") + (f"-seed{seed}" if seed is not None else "")
    return Path(out_dir) / "checkpoints" / name


def save_hyperdas(
    folder: str | Path,
    model: HyperDAS,
    train_config: HyperTrainConfig | None = None,
    extra: dict | None = None,
    state: dict | None = None,
) -> Path:
    """Trainable weights (safetensors) + configs; `state`: weights gathered elsewhere (FSDP)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else model.state_dict()
    # both files are written whole before either replaces its predecessor: a failure (a full disk)
    # leaves the previous checkpoint; the weights' checksums in the config catch a damaged file on load
    with atomic_paths(folder / WEIGHTS, folder / CONFIG) as (tmp, config_tmp):
        save_file(_unshared(state), str(tmp))
        payload = {
            "model": model.config.to_dict(),
            "train": train_config.to_dict() if train_config else None,
            "hidden_size": model.subspace.hidden,
            "target": model.target_name,
            **(extra or {}),
            "weights_checksums": file_checksums(tmp),
        }
        config_tmp.write_text(json.dumps(payload, indent=1, default=list))
    return folder


def _unshared(state: dict) -> dict:
    """`state` as safetensors takes it: contiguous, and a tensor seen under two names (tied weights,
    `HyperDASConfig.tie_attention`) stored twice; loading writes the same values into it twice."""
    seen, out = set(), {}
    for name, value in state.items():
        value = value.detach().contiguous()
        if value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        out[name] = value
    return out


def load_hyperdas(
    folder: str | Path, target, expect: HyperDASConfig | None = None, pairs=None
) -> tuple[HyperDAS, dict]:
    """Rebuild a saved HyperDAS model around `target`; refuses a checkpoint trained on another
    target, (when `expect` is given) one saved with another configuration, and (given the `pairs`
    it is about to be scored on) one trained from other pairs, another target or package version
    (`hyperdas.target.provenance`)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no HyperDAS checkpoint ({WEIGHTS}) in {folder}")
    fix = f"delete {folder} to train again, or pass another results folder"
    saved = read_or_explain(folder / CONFIG, lambda p: json.loads(p.read_text()), fix)
    if saved["hidden_size"] != target.hidden_size or saved.get("target", target.name) != target.name:
        raise CheckpointError(
            f"checkpoint {folder} was trained on {saved.get('target', '?')} (hidden size "
            f"{saved['hidden_size']}), not on {target.name} (hidden size {target.hidden_size})"
        )
    # a field the checkpoint predates: what runs were made with before it, else its default
    saved["model"] = {**HyperDASConfig().to_dict(), **MODEL_BEFORE_FIELDS, **saved["model"]}
    wanted = json.loads(json.dumps(expect.to_dict())) if expect is not None else saved["model"]  # JSON's types
    differ = sorted(k for k, v in wanted.items() if saved["model"].get(k) != v)
    if differ:
        raise CheckpointError(
            f"checkpoint {folder} was saved with another HyperDAS configuration (differs in {differ})"
        )
    if pairs is not None:
        check_provenance(
            saved.get("provenance"),
            provenance(target, pairs),
            folder,
            "train it again on these pairs (notebook 03; fresh=True) or score it on the pairs it was trained on",
        )
    check_checksums(folder / WEIGHTS, saved.get("weights_checksums"), fix)
    model = HyperDAS(target, HyperDASConfig.from_dict(saved["model"])).to(target.device)
    model.load_state_dict(read_or_explain(folder / WEIGHTS, lambda p: load_file(str(p)), fix))
    return model, saved


@dataclasses.dataclass
class HyperTrainResult:
    model: HyperDAS
    history: list[dict]
    best_step: int
    best_val: dict | None
    seconds: float
    resumed_from: int = 0
    provenance: dict | None = None  # what the checkpoint was built from (`hyperdas.target.provenance`)


def encoded_pairs(target, rows, template: str = DEFAULT_INSTRUCTION, answer_tokens: int | None = MAX_ANSWER_TOKENS):
    """Encoded pairs with their instructions (`template`: the model's `config.instruction`)."""
    check_rows(rows)
    return add_instructions(encode(target.tokenizer, rows, answer_tokens), target.tokenizer, rows, template)


def planned_store(
    target, parts, config: HyperDASConfig, train: HyperTrainConfig, folder=None, progress: bool = True
) -> str | None:
    """The store kind training will build over the encoded `parts` (training pairs first; None: none;
    a disk store needs the checkpoint `folder`); "auto" resolves to "memory" on a CPU when the run
    reads at least as many pairs as the store holds and the store fits its limit, else to none,
    saying why."""
    kind = train.activation_store
    if kind == "disk" and folder is None:
        raise ConfigError("HyperTrainConfig.activation_store='disk' needs a results folder (out_dir) to keep it in")
    if kind != "auto":
        return None if kind == "none" else kind
    if target.device.type != "cpu":
        return None
    reads = train.steps * train.batch_size
    if reads < len(parts[0]):  # building it reads every pair once: more than a short run reads at all
        if progress:
            print(
                f"no activation store: {train.steps} steps read {reads} pairs, "
                f"fewer than the {len(parts[0])} it would hold"
            )
        return None
    need = _store_bytes(target, parts, config, train)
    room = int(train.store_max_gib * 2**30) if train.store_max_gib is not None else default_limit("memory")
    if room is not None and need > room:
        if progress:
            print(
                f"no activation store: it needs {need / 2**30:.2f} GiB, more than the {room / 2**30:.2f} GiB it may "
                f"take, so the read passes run every step (store_dtype='float16' or activation_store='disk' keep one)"
            )
        return None
    return "memory"


def _store_bytes(target, parts, config: HyperDASConfig, train: HyperTrainConfig) -> int:
    """Bytes the activation stores of the encoded `parts` take."""
    read, dtype = read_rule(config, target.tokenizer), STORE_DTYPES[train.store_dtype]
    return sum(store_bytes(target, p, read, dtype) for p in parts)


def make_store(target, enc, config: HyperDASConfig, train: HyperTrainConfig, kind, folder=None, progress: bool = True):
    """An activation store of `kind` over `enc` (None for None); a disk store lives in `folder` and is
    reused there when it is not stale (`hyperdas.hyper.store`)."""
    if kind is None or not len(enc):
        return None
    limit = None if train.store_max_gib is None else int(train.store_max_gib * 2**30)
    store = ActivationStore(
        target,
        enc,
        config.layer,
        read_rule(config, target.tokenizer),
        kind,
        train.store_dtype,
        folder,
        limit,
        progress=progress,
    )
    if progress:
        print(store.describe())
    return store


def make_optimizer(model: HyperDAS, config: HyperTrainConfig) -> torch.optim.Optimizer:
    rotation = [p for n, p in model.named_parameters() if n.startswith("subspace.rotation.")]
    ids = {id(p) for p in rotation}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]  # frozen parts: no state
    groups = [{"params": rest, "lr": config.lr, "weight_decay": config.weight_decay}]
    if rotation:
        groups.append({"params": rotation, "lr": config.lr_rotation, "weight_decay": 0.0})
    try:  # one fused kernel (CPU since torch 2.4, CUDA); the per-tensor loop took 0.4 s of a 3.9 s SmolLM step
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups)


def validate(target, model: HyperDAS, enc, modes=MODES, runtime: Runtime = SINGLE, store=None) -> dict:
    model.eval()
    out = {
        mode: evaluate_sharded(runtime, target, model.config.layer, Inference(model, mode, store=store), enc)[0][
            "overall"
        ]
        for mode in modes
    }
    model.train()
    return out


def _differs(saved: dict, current: FrozenConfig, before: dict) -> bool:
    """Whether a resumable run was saved with another configuration than `current`. A field the
    run predates counts as what runs were made with before it (`before`), else as its default."""
    filled = {**type(current)().to_dict(), **before, **saved}
    return json.loads(json.dumps(filled)) != json.loads(json.dumps(current.to_dict()))


def ranked_scores(val: dict, train: HyperTrainConfig) -> dict:
    """The val scores that pick the kept step: the trained selection's mode where it was scored
    (a model trained for one-to-one is kept for its one-to-one Disentangle), else soft, else the first."""
    for mode in (train.train_selection, "soft"):
        if mode in val:
            return val[mode]
    return next(iter(val.values()))


def example_weights(enc, train: HyperTrainConfig) -> torch.Tensor:
    """The loss weight of each encoded pair: causal_weight or iso_weight by its kind."""
    return torch.tensor(
        [train.causal_weight if r["attribute_type"] == "causal" else train.iso_weight for r in enc.records]
    )


def train_step(
    target,
    model: HyperDAS,
    enc,
    index: list[int],
    weights: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    train: HyperTrainConfig,
    step: int,
    runtime: Runtime = SINGLE,
    planner=None,
    store=None,
) -> dict:
    """One optimisation step on the global batch `index`; returns its log entry (loss, ce, sparsity).
    `planner`: the module the accelerator wrapped (`runtime.prepare`), through which the
    hypernetwork runs so that DDP sees it; by default `model` itself. `store`: the read passes of
    `enc`, computed once (`make_store`)."""
    model.subspace.temperature = train.temperature(step)
    planner = planner if planner is not None else model
    total = sum(float(weights[i]) * len(enc.answers[i]) for i in index)
    sparsity_weight, parts = train.sparsity_weight(step), {"ce": [], "sparsity": [], "entropy": []}
    # the soft A's read width for the whole batch (each part is padded to its own); the entropy's only
    width = max(len(row) for row in model.read_rule.base_rows(enc, index)[0]) if train.selection_entropy else None

    def part_loss(part: list[int]):
        context = (
            checkpointed(target, model.config.layer % target.n_layers + 1) if train.checkpoint_target else nullcontext()
        )
        with context:
            logits, labels = intervened_logits(
                target,
                model.config.layer,
                Inference(model, train.selection_at(step), planner, store, straight_through=True),
                enc,
                part,
                None,
            )
        token_weights = torch.cat([weights[i].expand(len(enc.answers[i])) for i in part]).to(logits.device)
        ce = (torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none") * token_weights).sum() / total
        # the penalties are batch means: this part's share of them; on the soft A whatever the mode
        share = len(part) / len(index)
        sparsity = sparsity_penalty(model.last_soft.float()) * share
        parts["ce"].append(ce.item()), parts["sparsity"].append(sparsity.item())
        loss = ce + sparsity_weight * sparsity
        if train.selection_entropy:
            entropy = column_entropy(model.last_soft.float(), width) * share
            parts["entropy"].append(entropy.item())
            loss = loss + train.selection_entropy * entropy
        return loss

    for group in optimizer.param_groups:  # stateless: a resumed run sets the same rates
        group["lr"] = group.setdefault("base_lr", group["lr"]) * train.lr_factor(step)
    optimizer.zero_grad()
    loss = weighted_step(runtime, planner, index, part_loss)
    norm = runtime.clip(planner, train.clip)  # the wrapped module: FSDP clips over its shards
    if not (math.isfinite(loss) and math.isfinite(norm)):  # stop before the weights take a NaN
        raise TrainingDiverged(
            f"training diverged at step {step}: loss {loss}, gradient norm {norm}; the likely cause is the "
            f"learning rate (lr={train.lr}, lr_rotation={train.lr_rotation}): lower hyper_lr / hyper_lr_rotation"
        )
    optimizer.step()
    return {
        "step": step,
        "loss": loss,
        "ce": runtime.total(sum(parts["ce"])),
        "sparsity": runtime.total(sum(parts["sparsity"])),
        "sparsity_weight": sparsity_weight,
        **({"entropy": runtime.total(sum(parts["entropy"]))} if parts["entropy"] else {}),
    }


@one_writer("out_dir")  # one writer per checkpoint folder
def train_hyperdas(
    target,
    pairs,
    config: HyperDASConfig,
    train: HyperTrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    model: HyperDAS | None = None,
    check_memory: bool = True,
    runtime: Runtime = SINGLE,
) -> HyperTrainResult:
    """Train one HyperDAS model on every attribute of pairs["train"] (see module doc).

    `model`: an already built variant to train (e.g. an ablation's, with a part swapped); its
    config must be `config`. By default a fresh `HyperDAS(target, config)`. `check_memory`: print
    the memory estimate first and refuse a run the device cannot hold (`hyperdas.target.memory`).
    `runtime`: several processes under `accelerate launch` (`hyperdas.target.distributed.runtime()`);
    the numbers equal one process's on the same global batch, only the main process writes."""
    check_layer(target.n_layers, config.layer)
    started = time.perf_counter()
    torch.manual_seed(train.seed)
    enc, val = _training_pairs(target, pairs, config, train)
    parts = [p for p in (enc, val) if p is not None]
    store_kind = planned_store(target, parts, config, train, out_dir, progress and runtime.is_main)
    if check_memory:  # before anything is built: a run that cannot fit stops here, with the numbers
        _check_memory(target, config, train, parts, store_kind, runtime, progress)
    if model is not None and model.config != config:
        raise ValueError("train_hyperdas: the given model was built with another config than `config`")
    model = (model if model is not None else HyperDAS(target, config)).to(target.device)
    model.train()
    optimizer = make_optimizer(model, train)
    rng = random.Random(train.seed)
    history, best_val, best_step, best_state, first = [], None, 0, None, 1
    folder = Path(out_dir) if out_dir is not None else None
    built_from = provenance(target, pairs) if folder is not None else None
    saved = _restore(folder, config, train, built_from, model, optimizer, rng) if folder and resume else None
    if saved is not None:
        history, best_val, best_step, best_state = (
            saved["history"],
            saved["best_val"],
            saved["best_step"],
            saved["best_state"],
        )
        first = saved["step"] + 1
    weights = example_weights(enc, train)
    groups = sampling_groups(enc.records) if train.sampling == "balanced" else None
    stores = {
        split: make_store(
            target,
            part,
            config,
            train,
            store_kind,
            folder / "activations" / split if folder is not None else None,
            progress and runtime.is_main,
        )
        for split, part in (("train", enc), ("val", val))
        if part is not None
    }
    planner, optimizer = runtime.prepare(model, optimizer)
    writes = folder is not None and runtime.is_main
    if writes:
        folder.mkdir(parents=True, exist_ok=True)
        # a resumed run rewrites the log up to its saved step: no step is logged twice
        write_text(folder / LOG, "".join(json.dumps(entry) + "\n" for entry in history))
    bar = tqdm(range(first, train.steps + 1), desc="HyperDAS", disable=not (progress and runtime.is_main))
    for step in bar:
        index = draw_batch(rng, groups, len(enc), train.batch_size)
        try:
            entry = train_step(
                target, model, enc, index, weights, optimizer, train, step, runtime, planner, stores.get("train")
            )
        except TrainingDiverged as err:
            kept = f"; the best checkpoint so far (step {best_step}) stays in {folder}" if best_state and folder else ""
            raise TrainingDiverged(f"{err}{kept}, and a rerun needs --fresh (notebooks: fresh=True)") from None
        evaluated = val is not None and (step % train.eval_every == 0 or step == train.steps)
        if evaluated:
            entry["val"] = validate(target, model, val, train.eval_modes, runtime, stores.get("val"))
            ranked = ranked_scores(entry["val"], train)
            score = ranked["disentangle"]
            if best_val is None or score > best_val["disentangle"]:  # the same on every process
                best_val, best_step = ranked, step
                best_state = {k: v.detach().clone() for k, v in runtime.state_dict(planner, model).items()}
                if writes:
                    save_hyperdas(
                        folder, model, train, {"step": step, "val": entry["val"], "provenance": built_from}, best_state
                    )
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{score:.3f}")
            if step in train.snapshot_steps:
                state = runtime.state_dict(planner, model)
                if writes:
                    extra = {"step": step, "val": entry["val"], "provenance": built_from}
                    save_hyperdas(snapshot_folder(folder, step), model, train, extra, state)
        history.append(entry)
        if writes:
            append_line(folder / LOG, json.dumps(entry))
        if writes and not runtime.fsdp and (evaluated or step == train.steps):  # FSDP: no resume files
            best = {"best_val": best_val, "best_step": best_step, "best_state": best_state}
            _save_resume(folder, config, train, step, history, model, optimizer, rng, best, built_from)
    if best_state is not None and not runtime.fsdp:  # FSDP: the best weights are in the checkpoint
        model.load_state_dict(best_state)
    elif best_state is None and folder is not None:
        state = runtime.state_dict(planner, model)
        if writes:
            save_hyperdas(folder, model, train, {"step": train.steps, "provenance": built_from}, state)
    runtime.barrier()  # the checkpoint exists for every process from here on
    model.eval()
    return HyperTrainResult(
        model,
        history,
        best_step,
        best_val,
        time.perf_counter() - started,
        resumed_from=first - 1 if saved else 0,
        provenance=built_from,
    )


def _training_pairs(target, pairs, config: HyperDASConfig, train: HyperTrainConfig):
    """The encoded training pairs, after the checks that they can train what `train` asks, and the
    encoded val pairs (a seeded sample of `max_val_pairs`), or None without a val split."""
    rows = pairs["train"]
    enc = encoded_pairs(target, rows, config.instruction, train.answer_tokens)
    kinds = set(rows["attribute_type"])
    if "causal" not in kinds:
        raise RavelDataError("the training pairs hold no causal rows")
    if train.iso_weight > 0 and "isolate" not in kinds:
        raise RavelDataError(
            f"iso_weight={train.iso_weight} but the training pairs hold no isolate rows: "
            f"build pairs with isolate rows (notebook 01) or set iso_weight=0"
        )
    if "val" not in pairs or not len(pairs["val"]):
        return enc, None
    keep = list(range(len(pairs["val"])))
    if train.max_val_pairs is not None and len(keep) > train.max_val_pairs:
        keep = sorted(random.Random(train.seed).sample(keep, train.max_val_pairs))
    return enc, encoded_pairs(target, pairs["val"].select(keep), config.instruction)


def _check_memory(target, config, train, parts, store_kind, runtime: Runtime, progress: bool) -> None:
    """Print the memory estimate and refuse a run the device cannot hold."""
    per_process = -(-train.batch_size // runtime.world)  # each process holds its share only
    need = estimate_for(
        target, config, parts[0], min(per_process, runtime.micro_batch or per_process), train.checkpoint_target
    )
    if store_kind == "memory" and target.device.type == "cpu":  # a GPU's store is in host memory
        need = dataclasses.replace(need, activation_store=_store_bytes(target, parts, config, train))
    if progress and runtime.is_main:
        print(need.describe())
    check_fits(need)


def _restore(folder: Path, config, train, built_from, model, optimizer, rng) -> dict | None:
    """The state an interrupted run saved in `folder`, loaded into `model`, `optimizer` and `rng`;
    None when there is none. A run of another configuration or other pairs is refused, and so is a
    damaged "already done" checkpoint."""
    if not (folder / RESUME).is_file():
        return None
    fix = "delete it to start this run from step 0"
    saved = read_checked(folder / RESUME, lambda p: torch.load(p, weights_only=True), fix)
    if _differs(saved["config"], config, MODEL_BEFORE_FIELDS) or _differs(saved["train"], train, TRAIN_BEFORE_FIELDS):
        raise CheckpointError(
            f"{folder} holds a run with another configuration: rerun with --fresh (notebooks: fresh=True, "
            f"Python: resume=False) to train it again, or write to another results folder"
        )
    check_provenance(saved.get("provenance"), built_from, folder)
    if (folder / WEIGHTS).is_file():  # "already done" must not hide a damaged checkpoint
        from safetensors.torch import load_file

        fix = f"delete {folder} or rerun with --fresh"
        read_or_explain(folder / WEIGHTS, lambda p: load_file(str(p)), fix)
        if (folder / CONFIG).is_file():
            written = read_or_explain(folder / CONFIG, lambda p: json.loads(p.read_text()), fix)
            check_checksums(folder / WEIGHTS, written.get("weights_checksums"), fix)
    model.load_state_dict(saved["weights"])
    optimizer.load_state_dict(saved["optimizer"])
    rng.setstate((saved["rng"][0], tuple(saved["rng"][1]), saved["rng"][2]))
    return saved


def _save_resume(folder: Path, config, train, step, history, model, optimizer, rng, best: dict, built_from) -> None:
    """What `_restore` reads back: the run at `step`, written whole or not at all."""
    state = {
        "config": config.to_dict(),
        "train": json.loads(json.dumps(train.to_dict())),
        "step": step,
        "history": history,
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng.getstate(),
        **best,
        "provenance": built_from,
    }
    with checked_path(folder / RESUME) as tmp:
        torch.save(state, tmp)


def sampling_groups(records: list[dict]) -> list[list[int]]:
    """The training rows' indices grouped by (domain, instructed attribute), for balanced batches."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.get("domain", ""), r["target_attribute"]), []).append(i)
    return [groups[key] for key in sorted(groups)]


def draw_batch(rng: random.Random, groups: list[list[int]] | None, n_rows: int, batch_size: int) -> list[int]:
    """A batch of distinct row indices: uniform over the rows (`groups` None), or balanced: each
    place goes to a (domain, attribute) group drawn uniformly, then to a row of that group."""
    if groups is None:
        return rng.sample(range(n_rows), min(batch_size, n_rows))
    places = Counter(rng.randrange(len(groups)) for _ in range(batch_size))
    return [i for g, k in sorted(places.items()) for i in rng.sample(groups[g], min(k, len(groups[g])))]
