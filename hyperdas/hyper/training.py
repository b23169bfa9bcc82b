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
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.core.errors import TrainingDiverged
from hyperdas.core.files import (
    append_line,
    one_writer,
    write_text,
)
from hyperdas.hyper.checkpoints import (  # noqa: F401 (imported from here by notebooks and tests)
    CONFIG,
    LOG,
    RESUME,
    WEIGHTS,
    checkpoint_folder,
    load_hyperdas,
    save_hyperdas,
    snapshot_folder,
)
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference
from hyperdas.hyper.resume import restore, save_resume
from hyperdas.hyper.selection import MODES, column_entropy, sparsity_penalty
from hyperdas.hyper.store_plan import _store_bytes, make_store, planned_store  # noqa: F401
from hyperdas.hyper.train_config import (  # noqa: F401
    LR_SCHEDULES,
    SAMPLINGS,
    HyperTrainConfig,
    draw_batch,
    sampling_groups,
)
from hyperdas.hyper.train_setup import check_run_fits, encoded_pairs, example_weights, training_pairs  # noqa: F401
from hyperdas.target.distributed import SINGLE, Runtime, weighted_step
from hyperdas.target.evaluate import evaluate_sharded, intervened_logits
from hyperdas.target.hooks import check_layer, checkpointed
from hyperdas.target.provenance import provenance


@dataclasses.dataclass
class HyperTrainResult:
    model: HyperDAS
    history: list[dict]
    best_step: int
    best_val: dict | None
    seconds: float  # this call's wall time (with building the activation store)
    resumed_from: int = 0
    provenance: dict | None = None  # what the checkpoint was built from (`hyperdas.target.provenance`)
    # every call's wall time up to the last step, a resumed run's earlier ones included (None: a run resumed
    # from a checkpoint that predates this count)
    seconds_all_runs: float | None = None


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


def ranked_scores(val: dict, train: HyperTrainConfig) -> dict:
    """The val scores that pick the kept step: the trained selection's mode where it was scored
    (a model trained for one-to-one is kept for its one-to-one Disentangle), else soft, else the first."""
    for mode in (train.train_selection, "soft"):
        if mode in val:
            return val[mode]
    return next(iter(val.values()))


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
    cause = f"the likely cause is the learning rate (lr={train.lr}, lr_rotation={train.lr_rotation}): lower "
    cause += "hyper_lr / hyper_lr_rotation"
    try:
        loss = weighted_step(runtime, planner, index, part_loss)
    except torch.linalg.LinAlgError as err:  # weights grown huge but finite: R's map (Cayley's solve) fails
        why = str(err).splitlines()[0]
        message = f"training diverged at step {step}: the rotation's map failed ({why}); {cause}"
        raise TrainingDiverged(message) from None
    norm = runtime.clip(planner, train.clip)  # the wrapped module: FSDP clips over its shards
    if not (math.isfinite(loss) and math.isfinite(norm)):  # stop before the weights take a NaN
        raise TrainingDiverged(f"training diverged at step {step}: loss {loss}, gradient norm {norm}; {cause}")
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
    enc, val = training_pairs(target, pairs, config, train)
    shows, parts = progress and runtime.is_main, [p for p in (enc, val) if p is not None]
    store_kind = planned_store(target, parts, config, train, out_dir, shows)
    if check_memory:  # before anything is built: a run that cannot fit stops here, with the numbers
        check_run_fits(target, config, train, parts, store_kind, runtime, progress)
    run = _Run.start(target, pairs, config, train, out_dir, model, runtime, resume)
    run.started = started  # the pairs' encoding counts too
    stores = {
        split: make_store(target, part, config, train, store_kind, run.folder_for(split), shows)
        for split, part in (("train", enc), ("val", val))
        if part is not None
    }
    run.prepare()
    weights = example_weights(enc, train)
    groups = sampling_groups(enc.records) if train.sampling == "balanced" else None
    bar = tqdm(range(run.first, train.steps + 1), desc="HyperDAS", disable=not shows)
    for step in bar:
        index = draw_batch(run.rng, groups, len(enc), train.batch_size)
        entry = run.step(step, enc, index, weights, stores.get("train"))
        evaluated = val is not None and (step % train.eval_every == 0 or step == train.steps)
        if evaluated:
            run.evaluate(step, entry, val, stores.get("val"), bar)
        run.record(step, entry, evaluated)
    run.finish()
    return HyperTrainResult(
        run.model,
        run.history,
        run.best_step,
        run.best_val,
        time.perf_counter() - started,
        resumed_from=run.first - 1,
        provenance=run.built_from,
        seconds_all_runs=run.elapsed(),
    )


@dataclasses.dataclass
class _Run:
    """The state of one training run between its steps: model, optimizer, RNG, log, the best val
    step so far, and where (and whether) this process writes."""

    target: object
    model: HyperDAS
    optimizer: torch.optim.Optimizer
    rng: random.Random
    config: HyperDASConfig
    train: HyperTrainConfig
    runtime: Runtime
    folder: Path | None
    built_from: dict | None
    history: list = dataclasses.field(default_factory=list)
    best_val: dict | None = None
    best_step: int = 0
    best_state: dict | None = None
    first: int = 1
    planner: object = None
    seconds_before: float | None = 0.0  # what the runs this one resumed took (None: not recorded)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, target, pairs, config, train, out_dir, model, runtime, resume: bool) -> _Run:
        """A fresh run, or the one an interrupted run saved in `out_dir` (same configuration and pairs)."""
        if model is not None and model.config != config:
            raise ValueError("train_hyperdas: the given model was built with another config than `config`")
        model = (model if model is not None else HyperDAS(target, config)).to(target.device)
        model.train()
        folder = Path(out_dir) if out_dir is not None else None
        run = cls(
            target,
            model,
            make_optimizer(model, train),
            random.Random(train.seed),
            config,
            train,
            runtime,
            folder,
            provenance(target, pairs) if folder is not None else None,
        )
        saved = (
            restore(folder, config, train, run.built_from, model, run.optimizer, run.rng) if folder and resume else None
        )
        if saved is not None:
            run.history, run.best_val = saved["history"], saved["best_val"]
            run.best_step, run.best_state, run.first = saved["best_step"], saved["best_state"], saved["step"] + 1
            run.seconds_before = saved.get("seconds")
        return run

    def elapsed(self) -> float | None:
        """Wall seconds of this run so far, the runs it resumed included (None: theirs not recorded)."""
        return None if self.seconds_before is None else self.seconds_before + time.perf_counter() - self.started

    @property
    def writes(self) -> bool:
        return self.folder is not None and self.runtime.is_main

    def folder_for(self, split: str) -> Path | None:
        return self.folder / "activations" / split if self.folder is not None else None

    def prepare(self) -> None:
        """Wrap model and optimizer for the runtime; open the log (a resumed run rewrites it up to its
        saved step, so no step is logged twice)."""
        self.planner, self.optimizer = self.runtime.prepare(self.model, self.optimizer)
        if self.writes:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text(self.folder / LOG, "".join(json.dumps(entry) + "\n" for entry in self.history))

    def step(self, step: int, enc, index, weights, store) -> dict:
        try:
            return train_step(
                self.target, self.model, enc, index, weights, self.optimizer, self.train, step, self.runtime,
                self.planner, store,
            )  # fmt: skip
        except TrainingDiverged as err:
            kept = ""
            if self.best_state and self.folder:
                kept = f"; the best checkpoint so far (step {self.best_step}) stays in {self.folder}"
            raise TrainingDiverged(f"{err}{kept}, and a rerun needs --fresh (notebooks: fresh=True)") from None

    def evaluate(self, step: int, entry: dict, val, store, bar) -> None:
        """Score val in every eval mode; keep (and save) the best step; keep a snapshot when asked."""
        entry["val"] = validate(self.target, self.model, val, self.train.eval_modes, self.runtime, store)
        ranked = ranked_scores(entry["val"], self.train)
        extra = {"step": step, "val": entry["val"], "provenance": self.built_from}
        if self.best_val is None or ranked["disentangle"] > self.best_val["disentangle"]:  # the same on every process
            self.best_val, self.best_step = ranked, step
            self.best_state = {
                k: v.detach().clone() for k, v in self.runtime.state_dict(self.planner, self.model).items()
            }
            if self.writes:
                save_hyperdas(self.folder, self.model, self.train, extra, self.best_state)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{ranked['disentangle']:.3f}")
        if step in self.train.snapshot_steps:
            state = self.runtime.state_dict(self.planner, self.model)
            if self.writes:
                save_hyperdas(snapshot_folder(self.folder, step), self.model, self.train, extra, state)

    def record(self, step: int, entry: dict, evaluated: bool) -> None:
        """Log the step; after an evaluation (and the last step) save what a resumed run needs."""
        self.history.append(entry)
        if self.writes:
            append_line(self.folder / LOG, json.dumps(entry))
        if self.writes and not self.runtime.fsdp and (evaluated or step == self.train.steps):  # FSDP: no resume
            best = {"best_val": self.best_val, "best_step": self.best_step, "best_state": self.best_state}
            save_resume(
                self.folder, self.config, self.train, step, self.history, self.model, self.optimizer, self.rng,
                {**best, "seconds": self.elapsed()}, self.built_from,
            )  # fmt: skip

    def finish(self) -> None:
        """The best val step's weights in the model (saved as the checkpoint when nothing was
        evaluated); every process waits until the checkpoint exists."""
        if self.best_state is not None and not self.runtime.fsdp:  # FSDP: the best weights are in the checkpoint
            self.model.load_state_dict(self.best_state)
        elif self.best_state is None and self.folder is not None:
            state = self.runtime.state_dict(self.planner, self.model)
            if self.writes:
                extra = {"step": self.train.steps, "provenance": self.built_from}
                save_hyperdas(self.folder, self.model, self.train, extra, state)
        self.runtime.barrier()
        self.model.eval()
