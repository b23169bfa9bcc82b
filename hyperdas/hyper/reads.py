"""What the hypernetwork reads of a pair: the rows of token ids it sees, and where they map.

Base reads (`HyperDASConfig.base_read`):
- "prompt" (the paper's): the base prompt up to its entity's last token (the whole prompt with
  `include_suffix`). Where a template's text before the entity shows which attribute it asks
  (few-shot prefixes), the plan can depend on the question: HyperDAS can then abstain on isolate
  rows instead of isolating (`hyperdas.experiments.faithfulness`, the query-blind control).
- "entity": the base entity's own tokens, as the base prompt tokenizes them, after a fixed neutral
  prefix (`NEUTRAL`, with the tokenizer's special tokens). Nothing of the base template is read, so
  the plan (selection and subspace) is the same whichever attribute the base prompt asks: isolation
  must come from the subspace. Only the entity's tokens can be edited; read position p sits at base
  column p + shift.

The source is read up to its entity's last token (the whole prompt with `include_suffix`).
"""

from __future__ import annotations

import dataclasses

from hyperdas.core.config import ConfigError

BASE_READS = ("prompt", "entity")
NEUTRAL = "\n"  # a text that asks nothing; its first token takes the attention sink


@dataclasses.dataclass(frozen=True)
class ReadRule:
    include_suffix: bool = False
    base: str = "prompt"
    neutral: tuple[int, ...] = ()  # token ids before the entity in an "entity" read

    def __post_init__(self) -> None:
        if self.base not in BASE_READS:
            raise ConfigError(f"base_read={self.base!r}: use one of {BASE_READS}")
        if self.base == "entity" and self.include_suffix:
            raise ConfigError("base_read='entity' reads the base entity alone: include_suffix must be False")

    @property
    def first_selectable(self) -> int:
        """Read positions before this one are never selected (the neutral prefix)."""
        return len(self.neutral) if self.base == "entity" else 0

    @property
    def reads_prompt(self) -> bool:
        """Whether the base read rows are the base prompts themselves (the read pass can then start
        the edited run)."""
        return self.base == "prompt"

    def base_rows(self, enc, index: list[int]) -> tuple[list[list[int]], list[int], list[int]]:
        """(read rows, last selectable position of each, shift) of pairs `index`; read position p
        is the base prompt's column p + shift."""
        if self.reads_prompt:
            lasts = [enc.first[i] if self.include_suffix else enc.base_pos[i] for i in index]
            return [enc.base[i] for i in index], lasts, [0] * len(index)
        if not enc.base_start:
            raise ValueError("these encoded pairs carry no entity start: encode them with target.evaluate.encode")
        rows = [list(self.neutral) + enc.base[i][enc.base_start[i] : enc.base_pos[i] + 1] for i in index]
        shifts = [enc.base_start[i] - len(self.neutral) for i in index]
        return rows, [len(r) - 1 for r in rows], shifts

    def source_rows(self, enc, index: list[int]) -> tuple[list[list[int]], list[int]]:
        """(source rows, last selectable position of each) of pairs `index`."""
        rows = [enc.source[i] for i in index]
        return rows, [len(r) - 1 if self.include_suffix else enc.source_pos[i] for r, i in zip(rows, index)]

    def key(self) -> dict:
        return dataclasses.asdict(self) | {"neutral": list(self.neutral)}


def read_rule(config, tokenizer) -> ReadRule:
    """The `ReadRule` of a `HyperDASConfig` for a target's tokenizer."""
    base = getattr(config, "base_read", "prompt")
    neutral = tuple(tokenizer(NEUTRAL, add_special_tokens=True)["input_ids"]) if base == "entity" else ()
    return ReadRule(config.include_suffix, base, neutral)
