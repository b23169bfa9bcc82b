"""What the target model knows: RAVEL-<model>, the (template, entity) prompts it answers right.

Two stages, both cached on disk per model and data fingerprint: every template of an attribute
is scored on a small seeded sample of entities and the best N kept (each of RAVEL's prompt
splits gets a share proportional to its template count); then the kept templates are checked on all
(or a seeded sample of) entities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from collections import defaultdict
from pathlib import Path

from hyperdas.core.cache import cache_root
from hyperdas.core.config import FrozenConfig, check_ranges
from hyperdas.core.scoring import check_answers
from hyperdas.data.ravel import SPLITS, RavelDataError, RavelDomain
from hyperdas.data.verdicts import key_hash, read_record, record_path, write_record


@dataclasses.dataclass(frozen=True)
class FilterConfig(FrozenConfig):
    """templates_per_attribute / max_entities: None keeps all (the `full` setting)."""

    domain: str = "city"
    attributes: tuple[str, ...] = ("Country", "Continent", "Language")
    templates_per_attribute: int | None = 4
    selection_entities: int = 32
    max_entities: int | None = 1000
    batch_size: int = 64
    seed: int = 0
    query_blind_entities: int = 0  # entities checked with each query-blind template (0: none)
    # entities also checked against another entity's different value (0: none): how often a wrong answer passes
    chance_entities: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", tuple(self.attributes))  # JSON gives lists
        check_ranges(self, non_negative=("chance_entities", "query_blind_entities"))


def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def model_fingerprint(target) -> str:
    """Changes with the weights, dtype, quantisation, architecture or tokenizer; not with where
    the weights are stored (a moved cache keeps its verdicts)."""
    model = target.model
    weights = hashlib.sha256()
    for name, param in model.named_parameters():  # a cheap content sample: the first values of each
        weights.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
        weights.update(param.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return _digest(
        {
            "name": target.name,
            "weights": weights.hexdigest(),
            "load_in_4bit": target.config.load_in_4bit,
            "config": {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"},
            "vocab": len(target.tokenizer),
        }
    )


def data_fingerprint(data: RavelDomain) -> str:
    return _digest({"domain": data.domain, "values": data.entity_attributes, "prompts": data.attribute_to_prompts})


class AnswerCache:
    """Per-prompt verdicts on disk, so reruns and other notebooks never re-run a checked prompt."""

    def __init__(self, target, data: RavelDomain, root: Path | None = None, record_folder: Path | None = None):
        root = root or cache_root() / "filter"
        self.fingerprint = model_fingerprint(target)
        self.path = root / f"{target.name}-{self.fingerprint}" / f"{data.domain}-{data_fingerprint(data)}.json"
        self.verdicts: dict[str, bool] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        # what computing the stored verdicts cost, so a run served from the cache can still say it
        self.timing_path = self.path.with_suffix(".timing.json")
        self.timing = json.loads(self.timing_path.read_text()) if self.timing_path.is_file() else {}
        # the committed record beside the results (`hyperdas.data.verdicts`), if any: hashed keys
        self.domain = data.domain
        self.record = record_path(record_folder, data.domain) if record_folder is not None else None
        self.recorded, record_timing = read_record(self.record, self.fingerprint) if self.record else ({}, {})
        if not self.timing and record_timing:
            self.timing = dict(record_timing)
        self.looked_up: set[str] = set()
        self.computed = 0  # verdicts the model computed now
        self.from_record = 0  # verdicts read from the record now

    def seconds_per_prompt(self) -> float | None:
        """Mean seconds per verdict computed into this cache (None before any was timed)."""
        return self.timing["seconds"] / self.timing["prompts"] if self.timing.get("prompts") else None

    @staticmethod
    def key(template: str, entity: str, value: str) -> str:
        return f"{template}\t{entity}\t{value}"

    def check(
        self, target, items, batch_size: int, chunk: int = 2048, save_seconds: float = 60.0, progress: bool = True
    ) -> list[bool]:
        """Verdicts for (template, entity, value) items; only unseen ones are run.

        Saved at most every `save_seconds` (rewriting the whole file after every chunk would cost
        gigabytes of writes on a full run) and at the end, so an interrupt loses at most that much.
        """
        self.looked_up.update(self.key(*i) for i in items)
        todo = []
        for item in dict.fromkeys(i for i in items if self.key(*i) not in self.verdicts):
            recorded = self.recorded.get(key_hash(self.key(*item)))
            if recorded is None:
                todo.append(item)
            else:
                self.verdicts[self.key(*item)] = recorded
                self.from_record += 1
        last_save = time.monotonic()
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            began = time.perf_counter()
            for item, ok in zip(part, check_answers(target, part, batch_size=batch_size, progress=progress)):
                self.verdicts[self.key(*item)] = ok
            self.computed += len(part)
            self.timing = {
                "prompts": self.timing.get("prompts", 0) + len(part),
                "seconds": self.timing.get("seconds", 0.0) + time.perf_counter() - began,
            }
            if time.monotonic() - last_save >= save_seconds or start + chunk >= len(todo):
                self._save()
                last_save = time.monotonic()
        return [self.verdicts[self.key(*i)] for i in items]

    def write_record(self) -> Path | None:
        """The verdicts of every prompt looked up so far, as the committed record (when there is one)."""
        if self.record is None:
            return None
        looked_up = {k: self.verdicts[k] for k in self.looked_up}
        return write_record(self.record, looked_up, self.fingerprint, self.domain, self.timing)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.verdicts))
        os.replace(tmp, self.path)  # an interrupted run leaves the last complete file
        tmp.write_text(json.dumps(self.timing))
        os.replace(tmp, self.timing_path)


def _rank(split: str) -> int:
    return SPLITS.index(split) if split in SPLITS else len(SPLITS)


def split_quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """n slots shared among splits in proportion to their template counts (largest remainder),
    at least one for every split that has templates when n allows it; ties favour train, then val."""
    present = {s: c for s, c in counts.items() if c > 0}
    total = sum(present.values())
    exact = {s: n * c / total for s, c in present.items()}
    floor = 1 if n >= len(present) else 0
    quota = {s: min(present[s], max(floor, int(exact[s]))) for s in present}
    while sum(quota.values()) > n:  # the minimum of one per split can overshoot
        above = [s for s in quota if quota[s] > floor]
        quota[max(above, key=lambda s: (quota[s] - exact[s], _rank(s)))] -= 1
    while sum(quota.values()) < min(n, total):  # the split furthest below its exact share next
        open_ = [s for s in present if quota[s] < present[s]]
        quota[max(open_, key=lambda s: (exact[s] - quota[s], -_rank(s)))] += 1
    return quota


def select_templates(scores: dict[str, float], prompt_to_split: dict[str, str], n: int | None) -> list[str]:
    """The n best templates, each RAVEL prompt split keeping a share proportional to its size.

    Best by score within each split; ties break on the template text, so the choice is
    deterministic. Returned best first.
    """
    ranked = sorted(scores, key=lambda t: (-scores[t], t))
    if n is None or n >= len(ranked):
        return ranked
    per_split = {s: [t for t in ranked if prompt_to_split.get(t) == s] for s in SPLITS}
    quota = split_quotas({s: len(ts) for s, ts in per_split.items()}, n)
    chosen = {t for s, k in quota.items() for t in per_split[s][:k]}
    return [t for t in ranked if t in chosen]


@dataclasses.dataclass
class FilterResult:
    """known[attribute][template] = entities the model answers right with that template."""

    domain: str
    config: dict
    model_fingerprint: str
    data_fingerprint: str
    template_scores: dict[str, dict[str, float]]
    selected: dict[str, list[str]]
    known: dict[str, dict[str, list[str]]]
    n_prompts: dict[str, int]
    accuracy: dict[str, float]
    known_entities_per_split: dict[str, dict[str, int]]
    n_checked: int  # prompts actually run now (not from the cache)
    seconds: float
    # every prompt the filter needed (run now or read from the cache), and what the cache's verdicts cost
    # to compute per prompt: with n_checked 0, their product says what the filter costs from scratch
    n_looked_up: int = 0
    cache_seconds_per_prompt: float | None = None
    n_from_record: int = 0  # verdicts read from the committed record (`hyperdas.data.verdicts`), not run
    # the query-blind templates' known entities (`query_blind_templates`), when config.query_blind_entities
    blind_known: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)
    # per attribute, when config.chance_entities: `chance_rates` on a seeded sample of the checked entities
    chance: dict[str, dict] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FilterResult:
        return cls(**values)

    def summary(self) -> dict:
        """The parts worth a results file (everything but the entity lists)."""
        out = self.to_dict()
        for field in ("known", "blind_known"):
            out[field] = {a: {t: len(e) for t, e in per.items()} for a, per in getattr(self, field).items()}
        return out


def query_blind_templates(data: RavelDomain, attributes) -> dict[str, list[str]]:
    """Per attribute, the templates whose text before the entity also begins a template of another of
    `attributes`: read up to the entity, such a prompt does not reveal which attribute it asks.
    Entity-first templates (nothing before the entity) are left out: on a tokenizer without a BOS
    token the entity is then the first position, which the default sink rule never edits."""
    prefix = lambda t: t.split("%s")[0]  # noqa: E731
    asked_by = defaultdict(set)
    for attribute in attributes:
        for template in data.attribute_to_prompts.get(attribute, []):
            asked_by[prefix(template)].add(attribute)
    return {
        a: sorted(t for t in data.attribute_to_prompts.get(a, []) if prefix(t) and len(asked_by[prefix(t)]) > 1)
        for a in attributes
    }


def _entities_with(data: RavelDomain, attribute: str) -> list[str]:
    return sorted(e for e, values in data.entity_attributes.items() if values.get(attribute))


def filter_domain(
    target,
    data: RavelDomain,
    config: FilterConfig = FilterConfig(),
    progress: bool = True,
    record_folder: str | Path | None = None,
) -> FilterResult:
    """Select templates and find the prompts the target answers correctly (cached). With
    `record_folder`, verdicts are also read from and written to the committed record there
    (`hyperdas.data.verdicts`)."""
    data.check_attributes(list(config.attributes))
    started = time.perf_counter()
    cache = AnswerCache(target, data, record_folder=Path(record_folder) if record_folder is not None else None)
    rng = random.Random(config.seed)
    scores, selected, known, n_prompts, accuracy, chance = {}, {}, {}, {}, {}, {}
    for attribute in config.attributes:
        entities = _entities_with(data, attribute)
        if not entities:
            raise RavelDataError(f"{data.domain}/{attribute}: no entity has a value for this attribute")
        templates = data.attribute_to_prompts[attribute]
        sample = rng.sample(entities, min(config.selection_entities, len(entities)))
        scores[attribute] = _accuracy_per_template(cache, target, data, attribute, templates, sample, config, progress)
        selected[attribute] = select_templates(scores[attribute], data.prompt_to_split, config.templates_per_attribute)
        if config.max_entities is not None and config.max_entities < len(entities):
            entities = sorted(rng.sample(entities, config.max_entities))
        items = [(t, e, data.entity_attributes[e][attribute]) for t in selected[attribute] for e in entities]
        verdicts = cache.check(target, items, config.batch_size, progress=progress)
        per_template = defaultdict(list)
        for (template, entity, _), ok in zip(items, verdicts):
            if ok:
                per_template[template].append(entity)
        known[attribute] = {t: per_template.get(t, []) for t in selected[attribute]}
        n_prompts[attribute] = len(items)
        accuracy[attribute] = sum(verdicts) / len(items)
        if config.chance_entities:
            kept = selected[attribute]
            chance[attribute] = chance_rates(cache, target, data, attribute, kept, entities, config, progress)
    blind_known = _query_blind_known(cache, target, data, config, progress) if config.query_blind_entities else {}
    cache.write_record()
    if cache.from_record:
        cache._save()  # once, not per lookup: the local cache keeps what the record gave
    return FilterResult(
        domain=data.domain,
        config=config.to_dict(),
        model_fingerprint=cache.fingerprint,
        data_fingerprint=data_fingerprint(data),
        template_scores=scores,
        selected=selected,
        known=known,
        n_prompts=n_prompts,
        accuracy=accuracy,
        known_entities_per_split=_known_per_split(known, data),
        n_checked=cache.computed,
        seconds=time.perf_counter() - started,
        n_looked_up=len(cache.looked_up),
        n_from_record=cache.from_record,
        cache_seconds_per_prompt=cache.seconds_per_prompt(),
        blind_known=blind_known,
        chance=chance,
    )


def chance_rates(cache, target, data, attribute, templates, entities, config, progress=True) -> dict:
    """How often the check passes a wrong answer: a seeded sample of the checked entities, each asked
    with the kept templates and checked against its own value and against the value of a random other
    entity whose value differs (so a model that knows every entity passes none; one that always answers
    the commonest value, or a check that the first answer tokens of many years or coordinates fool,
    passes many).

    `own` / `wrong`: shares of the sample passing under at least one kept template, as an entity
    counts as known; `checked_entities`: how many entities the filter checked (the count chance scales
    to). An attribute whose entities all share one value has no wrong value: {} (nothing measured).
    """
    rng = random.Random(f"{config.seed}/chance/{attribute}")  # apart from the filter's stream
    value = lambda e: data.entity_attributes[e][attribute]  # noqa: E731
    sample = sorted(rng.sample(entities, min(config.chance_entities, len(entities))))
    wrong = {}
    for entity in sample:
        others = [o for o in entities if value(o) != value(entity)]
        if others:
            wrong[entity] = value(rng.choice(others))
    if not wrong:
        return {}
    rates = {}
    for name, answer in (("own", value), ("wrong", wrong.__getitem__)):
        items = [(t, e, answer(e)) for t in templates for e in wrong]
        verdicts = cache.check(target, items, config.batch_size, progress=progress)
        rates[name] = len({e for (_, e, _), ok in zip(items, verdicts) if ok}) / len(wrong)
    return {"entities": len(wrong), "checked_entities": len(entities), **rates}


def _query_blind_known(cache, target, data, config, progress) -> dict[str, dict[str, list[str]]]:
    """The entities the target answers right with each query-blind template, on a seeded sample."""
    rng = random.Random(f"{config.seed}/query_blind")
    out = {}
    for attribute, templates in query_blind_templates(data, config.attributes).items():
        entities = _entities_with(data, attribute)
        entities = sorted(rng.sample(entities, min(config.query_blind_entities, len(entities))))
        items = [(t, e, data.entity_attributes[e][attribute]) for t in templates for e in entities]
        verdicts = cache.check(target, items, config.batch_size, progress=progress)
        out[attribute] = {t: [e for (tt, e, _), ok in zip(items, verdicts) if ok and tt == t] for t in templates}
    return out


def _accuracy_per_template(cache, target, data, attribute, templates, sample, config, progress):
    items = [(t, e, data.entity_attributes[e][attribute]) for t in templates for e in sample]
    verdicts = cache.check(target, items, config.batch_size, progress=progress)
    hits = defaultdict(int)
    for (template, _, _), ok in zip(items, verdicts):
        hits[template] += ok
    return {t: hits[t] / len(sample) for t in templates}


def _known_per_split(known: dict[str, dict[str, list[str]]], data: RavelDomain) -> dict[str, dict[str, int]]:
    """Per attribute: entities known under at least one kept template, counted by entity split."""
    out = {}
    for attribute, per_template in known.items():
        entities = {e for es in per_template.values() for e in es}
        out[attribute] = {s: sum(data.entity_to_split.get(e) == s for e in entities) for s in SPLITS}
    return out
