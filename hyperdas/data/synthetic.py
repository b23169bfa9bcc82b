"""A made-up RAVEL world in the official file schema, and a tiny Llama that knows it.

Fictional cities belong to fictional countries; each country fixes its continent and language,
so those three attributes are entangled as in the real city domain. Each city's climate is drawn
on its own, independent of its country, and spelled by the first word of its name (every name
has two words). In the model, whose first block is local, the climate then sits on the entity's
first token and the country on its last: at layer 0 Country and Climate can both be swapped
perfectly, but only by a method that picks the right token for each (HyperDAS's selection),
not by one fixed position (DAS / MDAS at the last entity token). `write_world` writes the five
official files; `train_world_model` trains a tiny Llama (word-level tokenizer) on every templated
fact until the filter rule scores every attribute >= 95% correct. Both are built once into the cache
(`synthetic_ravel_dir`, spec "synthetic-llama"), so every later test runs the real pipeline on them.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.core.cache import cache_root, convert_once

WORLD_VERSION = "v3"  # v3: Climate, spelled by the first word of every city name
MODEL_VERSION = "v3"  # bump when the training recipe changes (v2: fact cards, v3: local first block)
ATTRIBUTES = ("Country", "Continent", "Language", "Climate")
CLIMATE_WORDS = {"Arid": "Dune", "Polar": "Frost", "Humid": "Marsh", "Alpine": "Mount", "Windy": "Cape", "Mild": "Vale"}
CONTINENTS = ("Norvia", "Sudara", "Estland", "Westmar", "Ocealis")
LANGUAGES = ("Velish", "Tarnic", "Ossan", "Quillan", "Brevan", "Moric", "Dantish", "Lurian", "Kesh", "Orran")
COUNTRY_NAMES = (
    "Arvenia",
    "Belmora",
    "Calderon",
    "Dravia",
    "Elmaris",
    "Fendor",
    "Galvania",
    "Hollin",
    "Istara",
    "Jorvik",
    "Kaldor",
    "Lumeria",
    "Morvan",
    "Nerith",
    "Oskaria",
    "Pellas",
    "Upper Tavia",
    "Rhovan",
    "Sylvara",
    "North Zent",
)
TEMPLATES = {  # template -> split
    "Country": {
        "%s is a city in the country of": "train",
        "The city of %s is located in": "train",
        "Travel guide : %s , a city in": "train",
        "%s belongs to the nation of": "train",
        "Q : Which country is %s in ? A :": "val",
        "Postcard from %s , in the country of": "test",
    },
    "Continent": {
        "%s is a city on the continent of": "train",
        "The city of %s lies on": "train",
        "Travel guide : %s , on the continent of": "train",
        "%s can be found on": "train",
        "Q : Which continent is %s on ? A :": "val",
        "Postcard from %s , on the continent of": "test",
    },
    "Language": {
        "People in %s speak": "train",
        "The main language of %s is": "train",
        "Travel guide : in %s people speak": "train",
        "%s residents talk in": "train",
        "Q : Which language is spoken in %s ? A :": "val",
        "Postcard from %s , written in": "test",
    },
    "Climate": {
        "The climate of %s is": "train",
        "The weather in %s is mostly": "train",
        "Travel guide : %s has a climate that is": "train",
        "%s is known for a climate that is": "train",
        "Q : What is the climate of %s ? A :": "val",
        "Postcard from %s , where the climate is": "test",
    },
}
WIKIPEDIA = (  # source-only prompts; None = any entity may be plugged in
    ("The mayor of %s said that", None),
    ("In %s , the weather was", None),
    ("A train left %s at noon and", None),
    ("The old market of %s is", None),
)
_SYLLABLES = ("ka", "lo", "ri", "ven", "tor", "mi", "sa", "dor", "el", "na", "bru", "zan", "qui", "fel", "om", "tas")


def world_facts(n_cities: int = 300, seed: int = 0) -> dict:
    """The world as plain data: countries (continent, language), cities (country), climates, splits."""
    rng = random.Random(seed)
    countries = {}
    for i, name in enumerate(COUNTRY_NAMES):
        countries[name] = {"Continent": CONTINENTS[i % len(CONTINENTS)], "Language": LANGUAGES[i % len(LANGUAGES)]}
    names = sorted({"".join(p).capitalize() for p in itertools.product(_SYLLABLES, repeat=3)})
    chosen = rng.sample(names, n_cities)
    own = random.Random(f"{seed}-climate")
    cities, climates = {}, {}
    for name in chosen:
        climate = own.choice(sorted(CLIMATE_WORDS))
        # two-word names ("Dune Kalori" is arid): with a local first block the climate lives on the
        # first token and the country on the last, so the two sit at different positions
        city = f"{CLIMATE_WORDS[climate]} {name}"
        cities[city], climates[city] = COUNTRY_NAMES[rng.randrange(len(COUNTRY_NAMES))], climate
    order = sorted(cities)
    rng.shuffle(order)
    cut1, cut2 = int(0.6 * n_cities), int(0.8 * n_cities)
    split = {c: ("train" if i < cut1 else "val" if i < cut2 else "test") for i, c in enumerate(order)}
    return {"countries": countries, "cities": cities, "climates": climates, "entity_split": split}


def write_world(folder: str | Path, n_cities: int = 300, seed: int = 0, domain: str = "city") -> Path:
    """Write the five official RAVEL files of one domain for the synthetic world."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    facts = world_facts(n_cities, seed)
    attributes = {
        city: {"Country": country, **facts["countries"][country], "Climate": facts["climates"][city]}
        for city, country in facts["cities"].items()
    }
    files = {
        f"ravel_{domain}_entity_attributes.json": attributes,
        f"ravel_{domain}_attribute_to_prompts.json": {a: list(TEMPLATES[a]) for a in ATTRIBUTES},
        f"ravel_{domain}_entity_to_split.json": facts["entity_split"],
        f"ravel_{domain}_prompt_to_split.json": {t: s for per in TEMPLATES.values() for t, s in per.items()},
        f"wikipedia_{domain}_entity_prompts.json": {
            t: {"split": s, "entity": None} for (t, _), s in zip(WIKIPEDIA, ("train", "train", "val", "test"))
        },
    }
    for name, payload in files.items():
        (folder / name).write_text(json.dumps(payload, indent=1))
    return folder


def synthetic_ravel_dir() -> Path:
    """The default synthetic world, written once into the cache."""
    return convert_once(cache_root() / "synthetic-ravel" / WORLD_VERSION, write_world)


def world_tokenizer(folder: Path):
    """Word-level tokenizer over every word of the world, adding a BOS token like real models do."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    words = set()
    for path in sorted(folder.glob("*.json")):
        for text in _strings(json.loads(path.read_text())):
            words |= {w for w, _ in splitter.pre_tokenize_str(text)}
    vocab = {t: i for i, t in enumerate(("<pad>", "<s>", "</s>", "<unk>", *sorted(words)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _strings(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _strings(value)
    elif isinstance(obj, str):
        yield obj


def _examples(world: Path, tokenizer, domain: str) -> list[tuple[list[int], list[int], str]]:
    """(prompt ids, answer ids, group): group is the queried attribute, or "card" (see below)."""
    from hyperdas.core.scoring import answer_ids

    values = json.loads((world / f"ravel_{domain}_entity_attributes.json").read_text())
    prompts = json.loads((world / f"ravel_{domain}_attribute_to_prompts.json").read_text())
    out = []
    for attribute, templates in prompts.items():
        for template in templates:
            for entity, attrs in values.items():
                text = template % entity
                ids = tokenizer(text)["input_ids"]
                out.append((ids, answer_ids(tokenizer, text, attrs[attribute]), attribute))
    # "fact cards": the entity alone, followed by its values. Predicting them at the entity token
    # makes the model enrich that token's residual stream, as real LMs do; without cards a tiny
    # model reads the entity's embedding straight from the question's last token in layer 0.
    for entity, attrs in values.items():
        card = " ".join(attrs[a] for a in prompts)
        out.append(
            (tokenizer(entity)["input_ids"], tokenizer(" " + card, add_special_tokens=False)["input_ids"], "card")
        )
    return out


def _batch(examples, pad_id):
    width = max(len(p) + len(a) for p, a, _ in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    for i, (prompt, answer, _) in enumerate(examples):
        seq = prompt + answer
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(prompt) - 1 : len(seq) - 1] = torch.tensor(answer)  # predict answer tokens only
    return ids, labels


def train_world_model(
    out: str | Path,
    world: str | Path,
    domain: str = "city",
    seed: int = 0,
    max_steps: int = 3000,
    target_accuracy: float = 0.95,
    local_layers: int = 1,
    progress: bool = True,
) -> dict:
    """Train a 4-layer d=128 Llama from scratch on every fact of the world; save it as a HF folder.

    The first `local_layers` blocks get a zero, frozen attention output, so they only transform
    each token on its own. Whatever later positions learn about the entity then flows through the
    entity tokens' residual stream after those blocks: the enrichment-then-extraction pattern of
    real LMs, held exactly, which makes the known-answer tests of interventions well posed.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    out, world = Path(out), Path(world)
    tokenizer = world_tokenizer(world)
    examples = _examples(world, tokenizer, domain)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    for block in model.model.layers[:local_layers]:
        torch.nn.init.zeros_(block.self_attn.o_proj.weight)
        block.self_attn.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    rng = random.Random(seed)
    accuracy, step = 0.0, 0
    bar = tqdm(total=max_steps, desc="training synthetic-llama", disable=not progress)
    for step in range(1, max_steps + 1):
        ids, labels = _batch(rng.sample(examples, 128), tokenizer.pad_token_id)
        logits = model(input_ids=ids).logits  # labels are already shifted: no `labels=` (it shifts again)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.update()
        if step % 100 == 0:
            accuracy = _accuracy(model, examples, tokenizer.pad_token_id)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
            if accuracy >= target_accuracy:
                break
    bar.close()
    if accuracy < target_accuracy:
        raise RuntimeError(f"synthetic-llama reached only {accuracy:.3f} accuracy in {max_steps} steps")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {"steps": step, "accuracy": accuracy, "n_facts": len(examples), "seed": seed, "local_layers": local_layers}
    (out / "training.json").write_text(json.dumps(report, indent=1))
    return report


@torch.no_grad()
def _accuracy(model, examples, pad_id) -> float:
    """Teacher-forced exact match of every answer token (the filter's rule): the lowest accuracy
    of any attribute's templates or of the fact cards."""
    model.eval()
    correct, total = {}, {}
    for start in range(0, len(examples), 512):
        chunk = examples[start : start + 512]
        ids, labels = _batch(chunk, pad_id)
        predicted = model(input_ids=ids).logits.argmax(-1)
        right = ((predicted == labels) | (labels == -100)).all(-1).tolist()
        for (_, _, group), ok in zip(chunk, right):
            correct[group] = correct.get(group, 0) + ok
            total[group] = total.get(group, 0) + 1
    model.train()
    return min(correct[g] / total[g] for g in total)


def synthetic_model_folder() -> Path:
    """The tiny Llama trained on the default world, built once into the cache."""
    world = synthetic_ravel_dir()
    return convert_once(
        cache_root() / "models" / f"synthetic-llama-{WORLD_VERSION}-{MODEL_VERSION}",
        lambda out: train_world_model(out, world),
    )
