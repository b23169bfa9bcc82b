"""The real embedded model: SmolLM2-135M-Instruct from its wheel, offline (slow: ~40 s conversion)."""

import time

import pytest

from hyperdas.target import models
from hyperdas.target.hooks import record_residual
from hyperdas.target.models import greedy_complete, load_target

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """First load into an empty cache (converts the GGUF), then a second load from the cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HYPERDAS_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    first = load_target("smollm2-135m")
    first_seconds = time.perf_counter() - start

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached folder should be used, not the GGUF")

    mp.setattr(models, "_gguf_to_hf_folder", no_conversion)
    start = time.perf_counter()
    second = load_target("smollm2-135m")
    cached_seconds = time.perf_counter() - start
    mp.undo()
    print(f"\nsmollm2-135m: first load {first_seconds:.1f} s, cached {cached_seconds:.1f} s")
    return first, second


def test_structure(embedded):
    first, second = embedded
    assert (first.n_layers, first.hidden_size) == (30, 576)
    assert type(first.model).__name__ == "LlamaForCausalLM"
    assert first.source == second.source
    assert not any(p.requires_grad for p in second.model.parameters())


def test_cached_folder_equals_the_gguf_model(embedded):
    import torch
    from transformers import AutoModelForCausalLM

    gguf_path = models.KNOWN_MODELS["smollm2-135m"].part_paths()[0]
    direct = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    cached = embedded[1].model
    direct_state, cached_state = direct.state_dict(), cached.state_dict()
    assert direct_state.keys() == cached_state.keys()
    for name, tensor in direct_state.items():
        assert tensor.equal(cached_state[name]), name
    ids = embedded[1].tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(direct(**ids).logits, cached(**ids).logits)


def test_knows_the_capital_of_france(embedded):
    completion = greedy_complete(embedded[1], ["The capital of France is"], max_new_tokens=8)[0]
    assert "Paris" in completion


def test_residual_stream_of_real_model(embedded):
    target = embedded[1]
    batch = target.tokenizer(["The capital of France is"], return_tensors="pt")
    with record_residual(target, [0, 15, 29]) as residual:
        target.model(**batch)
    assert residual[15].shape == (1, batch["input_ids"].shape[1], 576)


def test_filter_rule_on_real_city_prompts(embedded):
    """Prefix reuse changes nothing on real RAVEL templates; a fact the model knows passes."""
    from hyperdas.core.scoring import check_answers
    from hyperdas.data.ravel import load_domain

    target = embedded[1]
    data = load_domain("city")
    templates = [t for t in data.attribute_to_prompts["Country"] if t.index("%s") > 20][:2]
    templates.append("%s is a city in the country of")
    entities = ["Paris", "Tokyo", "Berlin", "Madrid", "Cairo", "Lima", "Toronto", "Sydney"]
    items = [(t, e, data.entity_attributes[e]["Country"]) for t in templates for e in entities]
    items += [("The capital of France is%s", "", "Paris"), ("The capital of France is%s", "", "Berlin")]
    reused = check_answers(target, items, batch_size=5, progress=False)
    assert reused == check_answers(target, items, batch_size=64, reuse_prefix=False, progress=False)
    assert reused[-2:] == [True, False]
    assert sum(reused) >= 8  # the model knows several of these capitals' countries
