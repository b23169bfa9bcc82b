"""Base/source pairs in HyperDAS's format, built from what the target model knows.

causal  (queried attribute = instructed attribute): expected output is the source entity's value
        (`counterfactual_target`); the two entities' values differ.
isolate (queried attribute != instructed attribute): expected output is the base entity's own
        value (`target`); the source entity's value of the queried attribute differs, so a leak shows.
Source prompts are any kept template (of any attribute) or a Wikipedia prompt; a Wikipedia prompt
that names its entity is only used with that entity. Sources are drawn value first, then entity,
so majority values (China, Europe, English) do not dominate.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from hyperdas.core.config import ConfigError, FrozenConfig
from hyperdas.core.scoring import answer_ids
from hyperdas.data.filter import FilterResult
from hyperdas.data.ravel import SPLITS, RavelDataError, RavelDomain

ENTITY_SPLITS = ("ravel", "both")
QUERY_BLIND = "query_blind"
PAIR_FIELDS = (
    "input_prefix",
    "input_suffix",
    "counterfactual_input_prefix",
    "counterfactual_input_suffix",
    "edit_instruction",
    "entity",
    "counterfactual_entity",
    "target",
    "counterfactual_target",
    "attribute_type",
    "domain",
    "attribute",
    "target_attribute",
    "base_template",
    "source_template",
    "source_kind",
    "base_entity_position",
    "source_entity_position",
    "split",
)


@dataclasses.dataclass(frozen=True)
class PairConfig(FrozenConfig):
    """How many pairs, of which kinds, over which splits.

    entity_split: "ravel" draws each split's entities from RAVEL's entity split; "both" (HyperDAS's
    main setting) uses every entity in every split, holding out templates only.
    generalisation_sets: add RAVEL's `test_entity` (held-out entities, train templates) and
    `test_context` (train entities, held-out templates) splits.
    query_blind_pairs: size of a `query_blind` split whose base templates do not reveal the asked
    attribute before the entity (`hyperdas.data.filter.query_blind_templates`; any template or entity
    split; needs a filter run with `query_blind_entities`). Attributes without such a known template
    get no causal pairs and are never queried there.
    """

    target_attributes: tuple[str, ...] = ("Country", "Continent", "Language")
    max_pairs: tuple[tuple[str, int], ...] = (("train", 2000), ("val", 200), ("test", 600))
    causal_fraction: float = 0.5
    entity_split: str = "both"
    generalisation_sets: bool = False
    wikipedia_sources: bool = True
    balance_sources: bool = True
    query_blind_pairs: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_attributes", tuple(self.target_attributes))
        pairs = dict(self.max_pairs.items() if isinstance(self.max_pairs, dict) else self.max_pairs)
        object.__setattr__(self, "max_pairs", tuple((k, int(v)) for k, v in pairs.items()))
        if self.entity_split not in ENTITY_SPLITS:
            raise ConfigError(f"PairConfig.entity_split={self.entity_split!r}: use one of {ENTITY_SPLITS}")
        if not 0.0 <= self.causal_fraction <= 1.0:
            raise ConfigError(f"PairConfig.causal_fraction={self.causal_fraction}: must lie in [0, 1]")
        unknown = [k for k, _ in self.max_pairs if k not in SPLITS]
        if unknown:
            raise ConfigError(f"PairConfig.max_pairs: unknown split(s) {unknown}; use {SPLITS}")

    def split_plan(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], int]]:
        """Output split -> (template splits, entity splits, number of pairs)."""
        plan = {}
        for split, n in self.max_pairs:
            entities = SPLITS if self.entity_split == "both" else (split,)
            plan[split] = ((split,), entities, n)
        if self.generalisation_sets:
            n_test = dict(self.max_pairs).get("test", 0)
            plan["test_entity"] = (("train",), ("test",), n_test)
            plan["test_context"] = (("test",), ("train",), n_test)
        if self.query_blind_pairs:
            plan[QUERY_BLIND] = (SPLITS, SPLITS, self.query_blind_pairs)
        return plan


def split_at_entity(text: str, entity: str) -> tuple[str, str]:
    """(prefix ending with the entity's last occurrence, rest): HyperDAS's input_prefix/suffix."""
    at = text.rfind(entity)
    if at < 0:
        raise RavelDataError(f"prompt {text!r} does not contain its entity {entity!r}")
    return text[: at + len(entity)], text[at + len(entity) :]


def last_entity_token(tokenizer, prefix: str, suffix: str) -> int:
    """Index, in the tokenized prompt (special tokens included), of the entity's last token."""
    return _token_at(tokenizer, prefix, suffix, len(prefix) - 1)


def first_entity_token(tokenizer, prefix: str, suffix: str, entity: str) -> int:
    """Index, in the tokenized prompt, of the token holding the entity's first character (`prefix`
    ends with the entity)."""
    if not entity or not prefix.endswith(entity):
        raise RavelDataError(f"prompt prefix {prefix!r} does not end with its entity {entity!r}")
    return _token_at(tokenizer, prefix, suffix, len(prefix) - len(entity))


def _token_at(tokenizer, prefix: str, suffix: str, char: int) -> int:
    encoded = tokenizer(prefix + suffix, add_special_tokens=True, return_offsets_mapping=True)
    for index, (start, end) in enumerate(encoded["offset_mapping"]):
        if start <= char < end:
            return index
    raise RavelDataError(f"no token covers character {char} (the entity) in {prefix + suffix!r}")


class _Pool:
    """Where entities and templates may be drawn from, for one output split."""

    def __init__(self, data: RavelDomain, known: dict, template_splits, entity_splits, wikipedia: bool, knows=None):
        self.data = data
        ok_entity = lambda e: data.entity_to_split.get(e) in entity_splits  # noqa: E731
        ok_template = lambda t: data.prompt_to_split.get(t) in template_splits  # noqa: E731
        # attribute -> template -> known entities, restricted to this split
        self.known = {
            a: {t: sorted(e for e in es if ok_entity(e)) for t, es in per.items() if ok_template(t)}
            for a, per in known.items()
        }
        # which entities' values the model knows (isolate sources): from `knows` when given
        self.knows = {
            a: sorted({e for es in per.values() for e in es if ok_entity(e)}) for a, per in (knows or known).items()
        }
        self.templates = sorted({t for per in self.known.values() for t in per})
        self.wikipedia = (
            sorted(  # (template, the entity it names or None); keys are unique
                (t, info.get("entity"))
                for t, info in data.wikipedia_prompts.items()
                if info["split"] in template_splits
            )
            if wikipedia
            else []
        )

    def value(self, entity: str, attribute: str) -> str | None:
        """The entity's value, or None where RAVEL has none (a missing or empty value): such an
        entity is never drawn for that attribute."""
        return self.data.entity_attributes[entity].get(attribute) or None

    def source_prompt(self, rng: random.Random, entity: str) -> tuple[str, str]:
        choices = [(t, "template") for t in self.templates]
        choices += [(t, "wikipedia") for t, named in self.wikipedia if named in (None, entity)]
        return rng.choice(choices)


def _pick_by_value(rng, entities, value_of, exclude_value, balance):
    """A source entity: a value drawn uniformly first (when balancing), then an entity with it."""
    candidates = [e for e in entities if value_of(e) not in (None, exclude_value)]
    if not candidates:
        return None
    if not balance:
        return rng.choice(candidates)
    values = sorted({value_of(e) for e in candidates})
    chosen = rng.choice(values)
    return rng.choice([e for e in candidates if value_of(e) == chosen])


def _draw(pool: _Pool, rng, kind: str, queried: str, instructed: str, balance: bool):
    """One candidate pair as (base template, base entity, source entity) or None."""
    templates = sorted(t for t, es in pool.known[queried].items() if es)
    template = rng.choice(templates)
    base = rng.choice(pool.known[queried][template])
    if kind == "causal":  # the model must know the source's value in the base's own template
        sources = [e for e in pool.known[queried][template] if e != base]
    else:  # the source must carry the instructed attribute the model knows
        sources = [e for e in pool.knows[instructed] if e != base]
    source = _pick_by_value(rng, sources, lambda e: pool.value(e, queried), pool.value(base, queried), balance)
    return None if source is None else (template, base, source)


def _row(pool: _Pool, tokenizer, rng, kind, queried, instructed, template, base, source, split) -> dict | None:
    target, counterfactual = pool.value(base, queried), pool.value(source, queried)
    base_text = template % base
    # the metric reads the first <= 3 answer tokens: equal tokens would make a leak invisible
    if answer_ids(tokenizer, base_text, target) == answer_ids(tokenizer, base_text, counterfactual):
        return None
    source_template, source_kind = pool.source_prompt(rng, source)
    prefix, suffix = split_at_entity(base_text, base)
    cf_prefix, cf_suffix = split_at_entity(source_template % source, source)
    return {
        "input_prefix": prefix,
        "input_suffix": suffix,
        "counterfactual_input_prefix": cf_prefix,
        "counterfactual_input_suffix": cf_suffix,
        "edit_instruction": f"{base} ; {source} - {instructed}",
        "entity": base,
        "counterfactual_entity": source,
        "target": target,
        "counterfactual_target": counterfactual,
        "attribute_type": kind,
        "domain": pool.data.domain,
        "attribute": queried,
        "target_attribute": instructed,
        "base_template": template,
        "source_template": source_template,
        "source_kind": source_kind,
        "base_entity_position": last_entity_token(tokenizer, prefix, suffix),
        "source_entity_position": last_entity_token(tokenizer, cf_prefix, cf_suffix),
        "split": split,
    }


def _quota(n: int, parts: int) -> list[int]:
    return [n // parts + (i < n % parts) for i in range(parts)]


def _jobs(config: PairConfig, n: int) -> list[tuple[str, str, str, int]]:
    """(kind, queried, instructed, count) for one split, spreading n evenly."""
    jobs = []
    attributes = config.target_attributes
    for instructed, n_attr in zip(attributes, _quota(n, len(attributes))):
        n_causal = round(n_attr * config.causal_fraction)
        others = [a for a in attributes if a != instructed]
        jobs.append(("causal", instructed, instructed, n_causal))
        if others:
            jobs += [("isolate", q, instructed, k) for q, k in zip(others, _quota(n_attr - n_causal, len(others)))]
        elif n_attr - n_causal:
            raise ConfigError("isolate pairs need at least two target attributes; set causal_fraction=1")
    return jobs


def build_pairs(data: RavelDomain, known: FilterResult, tokenizer, config: PairConfig = PairConfig()):
    """A `datasets.DatasetDict` of pairs, deterministic for `config.seed`."""
    from datasets import Dataset, DatasetDict

    data.check_attributes(list(config.target_attributes))
    missing = [a for a in config.target_attributes if a not in known.known]
    if missing:
        raise RavelDataError(f"attribute(s) {missing} were not filtered; filtered: {sorted(known.known)}")
    splits = {}
    for split, (template_splits, entity_splits, n) in config.split_plan().items():
        blind = split == QUERY_BLIND
        if blind and not known.blind_known:
            raise RavelDataError("query_blind_pairs needs a filter run with query_blind_entities > 0 (notebook 01)")
        if blind:  # blind base templates; an isolate source may be known through any template
            union = {a: {**per, **known.blind_known.get(a, {})} for a, per in known.known.items()}
            pool = _Pool(data, known.blind_known, template_splits, entity_splits, config.wikipedia_sources, union)
        else:
            pool = _Pool(data, known.known, template_splits, entity_splits, config.wikipedia_sources)
        rows = []
        for kind, queried, instructed, count in _jobs(config, n):
            if count == 0 or (blind and not any(pool.known[queried].values())):
                continue
            if not any(pool.known[queried].values()):
                raise RavelDataError(
                    f"zero usable {kind} pairs for {data.domain}/{queried} in split {split!r}: the model "
                    f"answered {sum(len(e) for e in known.known[queried].values())} of "
                    f"{known.n_prompts[queried]} prompts tried, none with a {'/'.join(template_splits)} "
                    f"template and a {'/'.join(entity_splits)} entity"
                )
            rng = random.Random(f"{config.seed}/{split}/{kind}/{queried}/{instructed}")
            rows += _sample(pool, tokenizer, rng, kind, queried, instructed, count, split, config.balance_sources)
        random.Random(f"{config.seed}/{split}/shuffle").shuffle(rows)
        splits[split] = Dataset.from_list(rows) if rows else Dataset.from_dict({f: [] for f in PAIR_FIELDS})
    return DatasetDict(splits)


def _sample(pool, tokenizer, rng, kind, queried, instructed, count, split, balance) -> list[dict]:
    rows, seen = [], set()
    for _ in range(20 * count):  # unique pairs; a small pool simply yields fewer
        if len(rows) == count:
            break
        drawn = _draw(pool, rng, kind, queried, instructed, balance)
        if drawn is None or drawn in seen:
            continue
        seen.add(drawn)
        row = _row(pool, tokenizer, rng, kind, queried, instructed, *drawn, split)
        if row is not None:
            rows.append(row)
    return rows


def pair_counts(pairs) -> dict[str, dict[str, int]]:
    """split -> "kind/instructed attribute" -> number of pairs."""
    return {
        split: dict(sorted(Counter(f"{k}/{a}" for k, a in zip(ds["attribute_type"], ds["target_attribute"])).items()))
        for split, ds in pairs.items()
    }


def source_label_counts(pairs, split: str = "train") -> dict[str, dict[str, int]]:
    """Per "kind/instructed attribute", how often each source value (`counterfactual_target`)
    occurs: what balancing flattens."""
    ds = pairs[split]
    out: dict[str, Counter] = {}
    for kind, attribute, value in zip(ds["attribute_type"], ds["target_attribute"], ds["counterfactual_target"]):
        out.setdefault(f"{kind}/{attribute}", Counter())[value] += 1
    return {k: dict(v.most_common()) for k, v in sorted(out.items())}
