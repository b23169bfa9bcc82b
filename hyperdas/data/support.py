"""Which domains and attributes the target knows well enough to measure: a rule, not a hand pick.

An attribute is kept when the filter found at least `min_known_entities` entities the model answers
right under a kept template, at least one of them under a val and one under a test template (else
that split has no pair asking the attribute), and its pairs hold at least `min_train_pairs` training
pairs whose instruction names it, causal ones among them in every split. Where the filter measured
chance (`FilterConfig.chance_entities`: the same check against another entity's different value),
the count is taken beyond chance (known entities less the share a wrong value passes, scaled to the
entities checked), and the wrong value's pass rate may be at most `max_chance_share` of the own
value's: a 3-token answer check passes many wrong years and coordinates, and a model answering its
commonest value passes many wrong values too. A domain needs two kept attributes when it has isolate
pairs (an isolate pair asks another attribute of the same domain). What is left out is reported with
its counts. A domain left with too few attributes is an error, or, with `short_domains="leave_out"`
(a profile over every RAVEL domain), left out and reported too; nothing left at all is always an
error.
"""

from __future__ import annotations

from collections import Counter

from hyperdas.data.ravel import RavelDataError

MIN_KNOWN_ENTITIES = 40
MIN_TRAIN_PAIRS = 200
MAX_CHANCE_SHARE = 0.5
SHORT_DOMAINS = ("error", "leave_out")


def known_counts(filtered: dict, datas: dict) -> list[dict]:
    """Per (domain, attribute): entities known under any kept template, under a val and a test one."""
    rows = []
    for domain, result in filtered.items():
        splits = datas[domain].prompt_to_split
        for attribute, per_template in result.known.items():
            known = {e for entities in per_template.values() for e in entities}
            under = {
                split: {e for t, entities in per_template.items() if splits.get(t) == split for e in entities}
                for split in ("val", "test")
            }
            rows.append(
                {
                    "domain": domain,
                    "attribute": attribute,
                    "known_entities": len(known),
                    "known_val": len(under["val"]),
                    "known_test": len(under["test"]),
                    **_beyond_chance(len(known), getattr(result, "chance", {}).get(attribute)),
                }
            )
    return rows


def _beyond_chance(known: int, chance: dict | None) -> dict:
    """The chance columns of a row: a wrong and the own value's pass rates on the filter's sample, and
    the known entities beyond what a wrong value passes (none without a measurement)."""
    if not chance:
        return {}
    by_chance = round(chance["wrong"] * chance["checked_entities"])
    return {"wrong_pass": chance["wrong"], "own_pass": chance["own"], "known_beyond_chance": known - by_chance}


def train_pair_counts(pairs) -> Counter:
    """(domain, instructed attribute) -> training pairs (causal and isolate)."""
    train = pairs["train"]
    return Counter(zip(train["domain"], train["target_attribute"]))


def causal_pair_counts(pairs, split: str) -> Counter:
    """(domain, instructed attribute) -> causal pairs in `split`."""
    rows = pairs[split]
    kinds = zip(rows["domain"], rows["target_attribute"], rows["attribute_type"])
    return Counter((d, a) for d, a, kind in kinds if kind == "causal")


def support_table(
    filtered: dict,
    datas: dict,
    pairs=None,
    min_known_entities: int = MIN_KNOWN_ENTITIES,
    min_train_pairs: int = MIN_TRAIN_PAIRS,
    max_chance_share: float = MAX_CHANCE_SHARE,
) -> list[dict]:
    """One row per filtered (domain, attribute) with its counts, `kept` and, when left out, `why`.
    Without `pairs` only the filter's counts are judged (the pairs are built from what passes)."""
    trained = train_pair_counts(pairs) if pairs is not None else None
    splits = [s for s in ("train", "val", "test") if pairs is not None and s in pairs]
    causal = {s: causal_pair_counts(pairs, s) for s in splits}
    rows = []
    for row in known_counts(filtered, datas):
        why = []
        if row["known_entities"] < min_known_entities:
            why.append(f"{row['known_entities']} known entities < {min_known_entities}")
        elif row.get("known_beyond_chance", min_known_entities) < min_known_entities:
            why.append(f"{row['known_beyond_chance']} known entities beyond chance < {min_known_entities}")
        if "wrong_pass" in row and row["wrong_pass"] > max_chance_share * row["own_pass"]:
            why.append(
                f"a wrong value passes the check for {row['wrong_pass']:.0%} of entities, the own value for "
                f"{row['own_pass']:.0%} (more than {max_chance_share:.0%} of it)"
            )
        for split in ("val", "test"):  # else that split has no pair asking this attribute
            if row[f"known_{split}"] == 0:
                why.append(f"no entity known under a {split} template")
        if trained is not None:
            row["train_pairs"] = trained.get((row["domain"], row["attribute"]), 0)
            if row["train_pairs"] < min_train_pairs:
                why.append(f"{row['train_pairs']} training pairs < {min_train_pairs}")
            # a causal pair needs two entities known under one template with different values: a model
            # right only for one value of a template (e.g. always "small") gets none; DAS and Cause need them
            for split, counts in causal.items():
                if row["train_pairs"] and not counts.get((row["domain"], row["attribute"])):
                    why.append(f"no causal pair in the {split} split")
        rows.append({**row, "kept": not why, **({"why": "; ".join(why)} if why else {})})
    return rows


def kept_attributes(rows: list[dict], isolate: bool = True, short_domains: str = "error") -> dict[str, list[str]]:
    """{domain: kept attributes} from `support_table`'s rows, in their order. A domain that keeps too
    few: one line naming it, its attributes' counts and the rule; or, with `short_domains="leave_out"`,
    the domain is left out and its rows say why (`kept` False)."""
    if short_domains not in SHORT_DOMAINS:
        raise ValueError(f"short_domains={short_domains!r}: use one of {SHORT_DOMAINS}")
    out: dict[str, list[str]] = {}
    need = 2 if isolate else 1
    for domain in dict.fromkeys(r["domain"] for r in rows):
        mine = [r for r in rows if r["domain"] == domain]
        kept = [r["attribute"] for r in mine if r["kept"]]
        if len(kept) >= need:
            out[domain] = kept
            continue
        counts = ", ".join(f"{r['attribute']}: {r.get('why', 'kept')}" for r in mine)
        if short_domains == "error":
            raise RavelDataError(
                f"{domain}: {len(kept)} attribute(s) pass the known-entity rule ({counts}); "
                f"{'isolate pairs need two' if isolate else 'one is needed'}: leave the domain out of "
                "`attributes`, set short_domains='leave_out', or lower min_known_entities / min_train_pairs"
            )
        for r in mine:
            if r["kept"]:
                r.update(kept=False, why=f"the domain keeps {len(kept)} attribute(s), {need} needed")
    if not out:
        raise RavelDataError(
            "no domain keeps enough attributes by the known-entity rule: lower min_known_entities / "
            "min_train_pairs, or choose other `attributes` (data_summary.json's `support` has the counts)"
        )
    return out


def left_out(rows: list[dict]) -> list[dict]:
    """The rows the rule left out, for the notebook's report and data_summary.json."""
    return [r for r in rows if not r["kept"]]


def supported_pairs(
    target,
    datas: dict,
    filtered: dict,
    pair_config,
    min_known_entities: int = MIN_KNOWN_ENTITIES,
    min_train_pairs: int = MIN_TRAIN_PAIRS,
    short_domains: str = "error",
    max_chance_share: float = MAX_CHANCE_SHARE,
):
    """(pairs, the rule's table, {domain: kept attributes}) for the attributes that pass the rule.
    The filter's counts choose first; an attribute then short of training pairs is dropped and the
    pairs built again (the quotas of the others change), until every built attribute passes."""
    from hyperdas.data.dataset import pairs_from

    if not 0 < max_chance_share <= 1:
        raise ValueError(f"max_chance_share={max_chance_share!r}: must lie in (0, 1] (0.5: chance may explain half)")
    isolate = pair_config.causal_fraction < 1
    before = support_table(filtered, datas, None, min_known_entities, min_train_pairs, max_chance_share)
    kept = kept_attributes(before, isolate, short_domains)
    dropped: dict[tuple[str, str], dict] = {}  # an attribute dropped after pairing: its row then
    while True:
        pairs = pairs_from(target, datas, filtered, pair_config, kept)
        rows = support_table(filtered, datas, pairs, min_known_entities, min_train_pairs, max_chance_share)
        built = [r for r in rows if r["attribute"] in kept.get(r["domain"], ())]
        now = kept_attributes(built, isolate, short_domains)
        if now == kept:
            return pairs, _marked(rows, before, dropped, kept), kept
        dropped.update(
            {(r["domain"], r["attribute"]): r for r in built if r["attribute"] not in now.get(r["domain"], ())}
        )
        kept = now


def _marked(rows: list[dict], before: list[dict], dropped: dict, kept: dict[str, list[str]]) -> list[dict]:
    """The final table. An attribute the final pairs were not built for (its training-pair count would
    read 0) keeps the row of the pairs it was dropped from, or the filter counts' row."""
    out = []
    for row, first in zip(rows, before):
        key = (row["domain"], row["attribute"])
        if row["attribute"] in kept.get(row["domain"], ()):
            out.append(row)
        elif key in dropped:
            out.append({**dropped[key], "kept": False, "why": dropped[key].get("why") or "its domain was left out"})
        else:
            out.append(first)
    return out
