"""How HyperDAS's training batches are drawn: uniform over rows, or balanced over (domain, attribute)."""

import random
from collections import Counter

import pytest

from hyperdas.core.config import ConfigError
from hyperdas.hyper.training import HyperTrainConfig, draw_batch, sampling_groups


def test_uniform_batches_draw_as_before():
    assert draw_batch(random.Random(3), None, 50, 16) == random.Random(3).sample(range(50), 16)


def test_balanced_batches_give_each_domain_and_attribute_an_equal_share():
    records = [{"domain": "city", "target_attribute": "Country"}] * 900 + [
        {"domain": "verb", "target_attribute": "Past Tense"}
    ] * 100
    groups = sampling_groups(records)
    assert [len(g) for g in groups] == [900, 100]
    rng, seen = random.Random(0), Counter()
    for _ in range(200):
        batch = draw_batch(rng, groups, len(records), 16)
        assert len(set(batch)) == len(batch) == 16  # distinct rows
        seen.update(records[i]["domain"] for i in batch)
    assert abs(seen["verb"] / sum(seen.values()) - 0.5) < 0.05  # uniform sampling would give 0.1


def test_an_unknown_sampling_is_refused():
    with pytest.raises(ConfigError, match=r"sampling='domain'.*\('uniform', 'balanced'\)"):
        HyperTrainConfig(sampling="domain")
