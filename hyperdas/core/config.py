"""Frozen run configurations that are saved next to every result and reload exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="FrozenConfig")


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names the field."""


@dataclasses.dataclass(frozen=True)
class FrozenConfig:
    """Base for configs: plain values only, JSON round-trip, unknown keys rejected by name."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**values)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"config_class": type(self).__name__, **self.to_dict()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        payload = json.loads(Path(path).read_text())
        saved_as = payload.pop("config_class", cls.__name__)
        if saved_as != cls.__name__:
            raise ConfigError(f"{path} holds a {saved_as}, not a {cls.__name__}")
        return cls.from_dict(payload)


@dataclasses.dataclass(frozen=True)
class ModelConfig(FrozenConfig):
    """Which target model to load and how.

    spec: an embedded name (see `hyperdas.target.models.KNOWN_MODELS`), a HF hub id or a local folder.
    dtype: "auto" picks float32 on CPU and bfloat16 on CUDA.
    """

    spec: str = "smollm2-135m"
    dtype: str = "auto"
    device: str = "cpu"
    load_in_4bit: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"ModelConfig.dtype={self.dtype!r}: use auto, float32, bfloat16 or float16")
