"""Teacher-forced answer checks, batched, with each template's shared prefix computed once.

HyperDAS's rule: append the value to the prompt (after a space unless the prompt already ends in
a space, a quote or an opening parenthesis), run one teacher-forced pass, and call the prompt
correct iff the argmax equals the value's token at each of its first <= 3 positions.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import defaultdict

import torch
from tqdm.auto import tqdm

NO_SPACE_AFTER = (" ", '"', "'", "(")
MAX_ANSWER_TOKENS = 3


def answer_text(prompt: str, value: str) -> str:
    """The text appended to `prompt` to spell `value` (leading space unless the prompt ends in one)."""
    return value if prompt.endswith(NO_SPACE_AFTER) else " " + value


def answer_ids(tokenizer, prompt: str, value: str, max_tokens: int = MAX_ANSWER_TOKENS) -> list[int]:
    """Token ids of the answer, tokenized on its own so the prompt's tokens never change."""
    ids = tokenizer(answer_text(prompt, value), add_special_tokens=False)["input_ids"]
    return ids[:max_tokens]


def prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    return tokenizer(prompts, add_special_tokens=True)["input_ids"]


def _common_prefix_length(rows: list[list[int]]) -> int:
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        token = first[i]
        if any(r[i] != token for r in rows):
            return i
    return n


def _prefix_cache(model, prefix: list[int], device):
    """Key/value cache of the shared prefix (batch of one)."""
    body = model.get_decoder()
    out = body(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    return out["cache"] if "cache" in out else out["past_key_values"]


@functools.cache
def _cache_kwarg(module_type: type) -> str:
    """transformers 5 renamed `past_key_values` to `cache`; accept both (looked up once per class)."""
    return "cache" if "cache" in inspect.signature(module_type.forward).parameters else "past_key_values"


def answer_logits(model, rows, wanted, pad_id: int = 0, prefix_len: int = 0, cache=None):
    """Logits at `wanted` (row, position) pairs of right-padded token `rows`, which may continue a
    shared prefix of `prefix_len` tokens whose key/value `cache` (batch of one) is given.

    The output head runs only at the wanted positions: on a 49k-token vocabulary it would
    otherwise cost as much as a fifth of the forward pass and most of its memory traffic.
    """
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, prefix_len : prefix_len + len(row)] = 1
    body = model.get_decoder()
    kwargs = {"use_cache": cache is not None}
    if cache is not None:
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(rows))
        kwargs[_cache_kwarg(type(body))] = cache
        kwargs["position_ids"] = (torch.arange(width) + prefix_len).expand(len(rows), -1).to(device)
    hidden = body(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).last_hidden_state
    row_index = torch.tensor([r for r, _ in wanted], device=device)
    position = torch.tensor([p for _, p in wanted], device=device)
    # argmax only: a final logit soft-cap (Gemma 2) is monotonic and can be skipped
    return model.get_output_embeddings()(hidden[row_index, position])


@torch.no_grad()
def check_answers(
    target,
    items: list[tuple[str, str, str]],
    batch_size: int = 64,
    reuse_prefix: bool = True,
    progress: bool = True,
) -> list[bool]:
    """For each (template, entity, value): does the model produce the value's first tokens?

    Items sharing a template share the tokens before the entity; those are run once and their
    key/value cache reused for every batch of that template (`reuse_prefix=False` turns this off,
    for the benchmark's comparison). Rows are right-padded, so padding never affects real tokens.
    """
    model, tokenizer, device = target.model, target.tokenizer, target.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    by_template: dict[str, list[int]] = defaultdict(list)
    for index, (template, _, _) in enumerate(items):
        by_template[template].append(index)
    results = [False] * len(items)
    bar = tqdm(total=len(items), desc="checking prompts", unit="prompt", disable=not progress)
    for template, indices in by_template.items():
        prompts = [template % items[i][1] for i in indices]
        ids = prompt_ids(tokenizer, prompts)
        answers = [answer_ids(tokenizer, p, items[i][2]) for p, i in zip(prompts, indices)]
        # keep >= 1 prompt token per row: its logits predict the first answer token
        shared = min(_common_prefix_length(ids), min(len(r) for r in ids) - 1) if reuse_prefix else 0
        cache = _prefix_cache(model, ids[0][:shared], device) if shared > 0 else None
        order = sorted(range(len(indices)), key=lambda j: len(ids[j]) + len(answers[j]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows = [ids[j][shared:] + answers[j][:-1] for j in chunk]
            # logits at position first + t predict answer token t
            firsts = [len(ids[j]) - shared - 1 for j in chunk]
            wanted = [(r, f + t) for r, (f, j) in enumerate(zip(firsts, chunk)) for t in range(len(answers[j]))]
            predicted = answer_logits(model, rows, wanted, pad_id, shared, cache).argmax(-1).tolist()
            for j in chunk:
                n = len(answers[j])
                results[indices[j]] = n > 0 and predicted[:n] == answers[j]
                predicted = predicted[n:]
            bar.update(len(chunk))
    bar.close()
    return results
