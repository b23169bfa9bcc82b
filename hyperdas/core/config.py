"""Frozen run configurations that are saved next to every result and reload exactly."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, TypeVar

from hyperdas.core.errors import HyperDASError
from hyperdas.core.files import write_text

T = TypeVar("T", bound="FrozenConfig")


class ConfigError(HyperDASError, ValueError):
    """A configuration value or file that cannot be used; the message names the field."""


def _type_problem(value: Any, annotation: str) -> str | None:
    """Why `value` does not fit a field annotated `annotation` (the plain types configs use), or None."""
    options = [part.strip() for part in annotation.split("|")]
    if value is None:
        return None if "None" in options else "must not be None"
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return None
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return None
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if option == "str" and isinstance(value, str):
            return None
        if option.startswith("tuple") and isinstance(value, (tuple, list, dict)):
            return None  # the shape is the config's own check
        if option not in ("bool", "int", "float", "str", "None") and not option.startswith("tuple"):
            return None  # a type this check does not know
    wanted = " or ".join("None" if o == "None" else (o.split("[")[0] if o.startswith("tuple") else o) for o in options)
    return f"must be {wanted}, not {type(value).__name__} {value!r}"


def check_types(config: FrozenConfig) -> None:
    """Refuse a field whose value has the wrong type, naming it, before any other check compares it."""
    for field in dataclasses.fields(config):
        problem = _type_problem(getattr(config, field.name), str(field.type))
        if problem:
            raise ConfigError(f"{type(config).__name__}.{field.name} {problem}")


def check_ranges(config: FrozenConfig, positive=(), non_negative=(), at_least_one=()) -> None:
    """Refuse numbers outside their range, naming the field (e.g. a negative learning rate)."""
    name = type(config).__name__
    for fields, ok, rule in (
        (positive, lambda v: v > 0, "> 0"),
        (non_negative, lambda v: v >= 0, ">= 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
    ):
        for field in fields:
            value = getattr(config, field)
            if value is not None and not math.isfinite(value):  # inf passes every comparison above
                raise ConfigError(f"{name}.{field}={value!r}: must be a finite number {rule}")
            if value is not None and not ok(value):
                raise ConfigError(f"{name}.{field}={value!r}: must be {rule}")


@dataclasses.dataclass(frozen=True)
class FrozenConfig:
    """Base for configs: plain values only, JSON round-trip, unknown keys rejected by name, and field
    types checked before a subclass's own `__post_init__` runs."""

    def __post_init__(self) -> None:
        check_types(self)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None:
            return  # the inherited __post_init__ checks the types already

        def __post_init__(self) -> None:
            check_types(self)
            own(self)

        cls.__post_init__ = __post_init__

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

    def to_json(self) -> str:
        """The text `save` writes and `load` reads."""
        payload = {"config_class": type(self).__name__, **self.to_dict()}
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"

    def save(self, path: str | Path) -> Path:
        return write_text(path, self.to_json())

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
