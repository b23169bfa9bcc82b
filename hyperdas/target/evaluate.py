"""One evaluation entry point for every method: intervene, read the answer, score RAVEL's way.

A pair is encoded once: the base prompt followed by its expected answer's first <= 3 tokens
(teacher forcing), the source prompt, and both entities' last-token positions. Source vectors
do not depend on the intervention's parameters, so they are computed once, without gradients,
stopping the forward pass after the intervened layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from hyperdas.core.metrics import exact_match, scores
from hyperdas.core.scoring import MAX_ANSWER_TOKENS, answer_ids, answer_logits
from hyperdas.data.pairs import first_entity_token
from hyperdas.target.distributed import Runtime
from hyperdas.target.hooks import can_start_after, check_layer, edit_residual, replace_at, start_after
from hyperdas.target.packed import can_pack, packed, packed_answer_logits

REQUIRED_FIELDS = (
    "input_prefix",
    "input_suffix",
    "counterfactual_input_prefix",
    "counterfactual_input_suffix",
    "target",
    "counterfactual_target",
    "attribute_type",
    "domain",
    "attribute",
    "target_attribute",
    "base_template",
    "base_entity_position",
    "source_entity_position",
)
RECORD_FIELDS = ("domain", "target_attribute", "attribute", "base_template", "attribute_type")


def expected_output(row) -> str:
    """causal: the source entity's value; isolate: the base entity's own value."""
    return row["counterfactual_target"] if row["attribute_type"] == "causal" else row["target"]


def check_rows(rows, what: str = "dataset") -> None:
    missing = [f for f in REQUIRED_FIELDS if f not in (rows.column_names if hasattr(rows, "column_names") else rows[0])]
    if missing:
        raise ValueError(f"{what} lacks required field(s) {missing}: build it with notebooks/01_data.ipynb")


@dataclasses.dataclass
class Encoded:
    """Token ids of a list of pairs (plain lists; batches are padded on the fly)."""

    base: list[list[int]]  # base prompt + answer tokens except the last
    answers: list[list[int]]  # expected answer's first <= 3 tokens
    first: list[int]  # index whose logits predict the first answer token
    base_pos: list[int]
    source: list[list[int]]
    source_pos: list[int]
    records: list[dict]  # the fields the metrics group by
    expected: list[str]  # the whole expected value (for the generation-based score)
    expected_len: list[int]  # its length in tokens, appended to the base prompt
    instructions: list[list[int]] = dataclasses.field(default_factory=list)  # HyperDAS's, when added
    base_start: list[int] = dataclasses.field(default_factory=list)  # the base entity's first token

    def __len__(self) -> int:
        return len(self.base)

    def subset(self, index: list[int]) -> Encoded:
        """The pairs `index`, in that order (e.g. one process's share of a split)."""
        return Encoded(
            **{
                f.name: [getattr(self, f.name)[i] for i in index] if getattr(self, f.name) else []
                for f in dataclasses.fields(self)
            }
        )


def encode(tokenizer, rows, answer_tokens: int | None = MAX_ANSWER_TOKENS) -> Encoded:
    """The pairs as token ids, the expected answer cut to its first `answer_tokens` tokens (None:
    all of them; scoring reads the first MAX_ANSWER_TOKENS either way, training's loss all kept)."""
    check_rows(rows)
    enc = Encoded([], [], [], [], [], [], [], [], [])
    for row in rows:
        prompt = row["input_prefix"] + row["input_suffix"]
        ids = tokenizer(prompt)["input_ids"]
        full = answer_ids(tokenizer, prompt, expected_output(row), max_tokens=None)
        answer = full[:answer_tokens] if answer_tokens is not None else full
        enc.base.append(ids + answer[:-1])
        enc.answers.append(answer)
        enc.first.append(len(ids) - 1)
        enc.base_pos.append(row["base_entity_position"])
        entity = row.get("entity")  # rows without it: the entity is taken to be its last token
        enc.base_start.append(
            first_entity_token(tokenizer, row["input_prefix"], row["input_suffix"], entity)
            if entity
            else row["base_entity_position"]
        )
        enc.source.append(
            tokenizer(row["counterfactual_input_prefix"] + row["counterfactual_input_suffix"])["input_ids"]
        )
        enc.source_pos.append(row["source_entity_position"])
        # the instructed source entity too: leakage controls key on it (hyperdas.experiments.leakage)
        enc.records.append(
            {**{f: row[f] for f in RECORD_FIELDS}, "counterfactual_entity": row.get("counterfactual_entity")}
        )
        enc.expected.append(expected_output(row))
        enc.expected_len.append(len(full))
    return enc


class _Stop(Exception):
    pass


@torch.no_grad()
def states_after(target, layer: int, rows: list[list[int]]) -> torch.Tensor:
    """(B, T, D) residual stream after `layer` of right-padded `rows`; the blocks above are not run."""
    grabbed = {}

    def grab(hidden):
        grabbed["h"] = hidden
        raise _Stop  # nothing above the layer is needed

    try:
        with edit_residual(target, layer, grab):
            answer_logits(target.model, rows, [(0, 0)], target.tokenizer.pad_token_id or 0)
    except _Stop:
        pass
    return grabbed["h"]


@torch.no_grad()
def source_vectors(target, layer: int, enc: Encoded, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
    """(N, D) residual vectors after `layer` at each source's entity position."""
    layer = check_layer(target.n_layers, layer)
    out = []
    for start in tqdm(range(0, len(enc), batch_size), desc="source states", disable=not progress):
        rows = enc.source[start : start + batch_size]
        pos = torch.tensor(enc.source_pos[start : start + batch_size], device=target.device)
        hidden = states_after(target, layer, rows)
        out.append(hidden[torch.arange(len(rows), device=hidden.device), pos].float())
    return torch.cat(out)


def make_edit(
    method,
    target,
    layer: int,
    enc: Encoded,
    index: list[int],
    sources: torch.Tensor | None,
    rows: list[list[int]],
    offsets: list[int],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The residual edit of `method` for the examples `index`, laid out as `rows` padded to a common
    width with `offsets[r]` pad tokens before row r (0 for right padding).

    `method` is either a one-position intervention module (``forward(base, source)``: DAS, MDAS,
    full patch; applied at the base entity token from `sources`) or any object with its own
    ``edit_for(...)`` of this signature (HyperDAS). Edits apply to the pass that sees the whole
    padded width only, so cached decoding steps pass through.
    """
    if hasattr(method, "edit_for"):
        return method.edit_for(target, layer, enc, index, rows, offsets)
    return one_position_edit(method, target, enc, index, sources[index], rows, offsets)


def one_position_edit(module, target, enc: Encoded, index: list[int], src: torch.Tensor, rows, offsets):
    """`module(base, source)` applied at each base entity token of `index`, `src` its (n, D) source
    vectors (layout as in `make_edit`)."""
    width = max(off + len(r) for off, r in zip(offsets, rows))
    pos = torch.tensor([off + enc.base_pos[i] for off, i in zip(offsets, index)], device=target.device)
    src = src.to(target.device)
    batch = torch.arange(len(index), device=target.device)

    def edit(hidden):
        if hidden.shape[1] != width:
            return hidden
        return replace_at(hidden, pos, module(hidden[batch, pos], src.to(hidden.dtype)))

    return edit


PACK_ROWS = True  # the edited run from stored states packs its rows (False: padded, for the step benchmark)


def intervened_logits(target, layer: int, method, enc: Encoded, index: list[int], sources: torch.Tensor | None):
    """Logits at the answer positions of examples `index` with the method's edit after `layer`;
    returns (logits (n_tokens, V), answer token ids (n_tokens,))."""
    rows = [enc.base[i] for i in index]
    edit = make_edit(method, target, layer, enc, index, sources, rows, [0] * len(rows))
    wanted = [(r, enc.first[i] + t) for r, i in enumerate(index) for t in range(len(enc.answers[i]))]
    start = getattr(edit, "start", None)  # the unedited stream after `layer` for these rows, if known
    if start is not None and can_start_after(target):  # then blocks 0..layer need not run again
        edited = edit(start)
        if PACK_ROWS and can_pack(target.model):  # and the rows run packed: no prompt pass is left to pad for
            with start_after(target, layer, packed(edited, [len(r) for r in rows])):
                logits = packed_answer_logits(target.model, rows, wanted)
        else:
            with start_after(target, layer, edited):
                logits = answer_logits(target.model, rows, wanted, target.tokenizer.pad_token_id or 0)
    else:
        with edit_residual(target, layer, edit):
            logits = answer_logits(target.model, rows, wanted, target.tokenizer.pad_token_id or 0)
    labels = torch.tensor([t for i in index for t in enc.answers[i]], device=logits.device)
    return logits, labels


def generated_answers(
    target, layer: int, method, enc: Encoded, index: list[int], sources: torch.Tensor | None, extra_tokens: int = 2
) -> list[str]:
    """Greedy continuations of the base prompts of `index`, the method's edit applied to the prompt.

    The prompt pass (left-padded, position ids counted from each row's first real token, so
    padding never shifts positions) carries the edit; the answer tokens then reuse its
    key/value cache, as decoding does.
    """
    from hyperdas.core.scoring import _cache_kwarg

    prompts = [enc.base[i][: enc.first[i] + 1] for i in index]
    width, device = max(len(p) for p in prompts), target.device
    pad = target.tokenizer.pad_token_id or 0
    offsets = [width - len(p) for p in prompts]
    ids = torch.tensor([[pad] * off + p for off, p in zip(offsets, prompts)], device=device)
    mask = torch.tensor([[0] * off + [1] * len(p) for off, p in zip(offsets, prompts)], device=device)
    edit = make_edit(method, target, layer, enc, index, sources, prompts, offsets)
    body, head = target.model.get_decoder(), target.model.get_output_embeddings()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    generated, kwargs = [], {"input_ids": ids}
    with edit_residual(target, layer, edit):
        for _ in range(max(enc.expected_len[i] for i in index) + extra_tokens):
            out = body(attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
            token = head(out.last_hidden_state[:, -1]).argmax(-1)
            generated.append(token)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            kwargs = {"input_ids": token[:, None], _cache_kwarg(type(body)): cache}
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions[:, -1:] + 1
    tokens = torch.stack(generated, dim=1).tolist()
    return [target.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


def generation_match(text: str, expected: str) -> bool:
    """RAVEL-style check of a greedy continuation: it starts with the whole expected value."""
    return " ".join(text.split()).startswith(" ".join(expected.split()))


MODES = ("teacher_forced", "generation")


@torch.no_grad()
def evaluate(
    target,
    layer: int,
    method,
    enc: Encoded,
    sources: torch.Tensor | None = None,
    batch_size: int = 32,
    progress: bool = False,
    mode: str = "teacher_forced",
) -> tuple[dict, list[dict]]:
    """(scores, per-example records with `correct`) for any method (see `make_edit`).

    mode "teacher_forced": the argmax matches the expected value's first <= 3 tokens (training's
    rule); "generation": a greedy continuation starts with the whole value (for final tables).
    """
    if mode not in MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; use one of {MODES}")
    if sources is None and not hasattr(method, "edit_for"):
        sources = source_vectors(target, layer, enc, batch_size)
    records = []
    for start in tqdm(range(0, len(enc), batch_size), desc="evaluating", disable=not progress):
        index = list(range(start, min(start + batch_size, len(enc))))
        if mode == "generation":
            texts = generated_answers(target, layer, method, enc, index, sources)
            for i, text in zip(index, texts):
                records.append({**enc.records[i], "correct": generation_match(text, enc.expected[i]), "output": text})
            continue
        logits, _ = intervened_logits(target, layer, method, enc, index, sources)
        predicted = logits.argmax(-1).tolist()
        for i in index:
            n = len(enc.answers[i])
            records.append({**enc.records[i], "correct": exact_match(predicted[:n], enc.answers[i])})
            predicted = predicted[n:]
    return scores(records), records


def evaluate_sharded(runtime: Runtime, target, layer: int, method, enc, sources: torch.Tensor | None = None, **kwargs):
    """`hyperdas.target.evaluate.evaluate` with the pairs split over the processes and the per-example
    records gathered: every process returns the scores of the whole split."""
    if runtime.world == 1:
        return evaluate(target, layer, method, enc, sources, **kwargs)
    mine = list(range(runtime.rank, len(enc), runtime.world))
    records = []
    if mine:
        part_sources = None if sources is None else sources[mine]
        records = evaluate(target, layer, method, enc.subset(mine), part_sources, **kwargs)[1]
    gathered = sorted(runtime.gather(list(zip(mine, records))), key=lambda pair: pair[0])
    records = [record for _, record in gathered]
    return scores(records), records
