"""Params files: load, validate against the schema, and turn one section into a stage's config dataclass.

Config flows one way: a params file (params.yaml, configs/<profile>.yaml) -> one section -> a dataclass defined next
to the stage that uses it -> the stage function. Nothing under `ssmttm` reads params.yaml on its own; the CLI and
the Snakefile pass the file explicitly.

The schema is split per section: `schemas/params.schema.yaml` lists the top-level keys and each section's schema
sits in `schemas/<section>.schema.yaml`, so each stage owns its part of the contract.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace variation: the form in which params, recipes and records are hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


SCHEMA_DIR = Path(__file__).parent / "schemas"
PROFILE_DIR_NAME = "configs"

T = TypeVar("T")


class ParamsError(ValueError):
    """A params file is missing, unreadable or invalid. The message names the file, the key and what is allowed."""


@cache
def load_schema() -> dict[str, Any]:
    """The full params schema: top level plus every `<section>.schema.yaml` under `properties`."""
    top = yaml.safe_load((SCHEMA_DIR / "params.schema.yaml").read_text())
    for section_file in sorted(SCHEMA_DIR.glob("*.schema.yaml")):
        name = section_file.name.removesuffix(".schema.yaml")
        if name == "params":
            continue
        top["properties"][name] = yaml.safe_load(section_file.read_text())
    # A run's overrides follow the same rules as the shared sections they replace keys of.
    run = top["properties"]["runs"]["additionalProperties"]["properties"]
    for section in ("lm", "train_lm"):
        run[section].update(additionalProperties=False, properties=top["properties"][section]["properties"])
    return top


def _dotted(path: typing.Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line saying which key is wrong, its value, and what is allowed."""
    key = _dotted(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        where = f"{key}." if error.absolute_path else ""
        return f"unknown key '{where}{extra[0] if extra else '?'}'; allowed keys here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"{key}: {error.message}"
    value = error.instance
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{key} = {value!r} is not allowed; must be one of: {allowed}"
    if error.validator == "type":
        return f"{key} = {value!r} has the wrong type; expected {error.validator_value}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[error.validator]
        return f"{key} = {value!r} is out of range; must be {bound} {error.validator_value}"
    description = schema.get("description", "")
    hint = f" ({description})" if description else ""
    return f"{key} = {value!r} is invalid: {error.message}{hint}"


def _is_python_int(checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# JSON Schema counts 44100.0 as an integer; a stage given a float where it counts samples or steps crashes later, so
# an integer here is what YAML reads as one.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_python_int),
)


def non_finite_numbers(value: Any, path: tuple = ()) -> list[str]:
    """Dotted keys of every NaN or infinite number in a params tree. JSON Schema's `minimum`/`maximum` let NaN pass
    (every comparison with it is false) and YAML reads `.nan` and `.inf`, so finiteness is checked here, for all
    numbers at once."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{_dotted(path)} = {value!r}"]
    if isinstance(value, Mapping):
        return [bad for key, item in value.items() for bad in non_finite_numbers(item, (*path, key))]
    if isinstance(value, list | tuple):
        return [bad for i, item in enumerate(value) for bad in non_finite_numbers(item, (*path, i))]
    return []


def validate_params(params: Mapping[str, Any], source: str = "params") -> None:
    """Raise ParamsError naming the first bad key (deepest, most specific error first), then the cross-field rules."""
    non_finite = non_finite_numbers(params)
    if non_finite:
        more = f" (and {len(non_finite) - 1} more)" if len(non_finite) > 1 else ""
        raise ParamsError(f"{source}: {non_finite[0]} is not a finite number; give a finite value{more}")
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ParamsError(f"{source}: {_describe(best)}{more}")
    problems = cross_field_problems(params)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise ParamsError(f"{source}: {problems[0]}{more}")


def params_value(params: Mapping[str, Any], dotted: str) -> Any:
    """The value of a section (`generate`) or of a dotted key (`generate.captions`); None where it is absent."""
    value: Any = params
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def cross_field_problems(params: Mapping[str, Any]) -> list[str]:
    """Consistency rules between keys that a per-key schema cannot state; each message names the keys."""
    problems = []
    for low, high in (
        ("select.min_duration_s", "select.max_duration_s"),
        ("segment.min_tail_seconds", "segment.clip_seconds"),
    ):
        a, b = params_value(params, low), params_value(params, high)
        if isinstance(a, int | float) and isinstance(b, int | float) and a > b:
            problems.append(f"{low} = {a!r} is larger than {high} = {b!r}; it must not be")
    fractions = [params_value(params, f"tokenize.{k}") for k in ("valid_fraction", "test_fraction")]
    if all(isinstance(f, int | float) for f in fractions) and sum(fractions) >= 1:
        problems.append(
            f"tokenize.valid_fraction + tokenize.test_fraction = {sum(fractions)!r} leaves no training data; "
            "their sum must be below 1"
        )
    runs = params.get("runs") if isinstance(params.get("runs"), Mapping) else {}
    for name, entry in runs.items():
        own = {**(params.get("train_lm") or {}), **((entry or {}).get("train_lm") or {})}
        warmup, steps = own.get("warmup_steps"), own.get("max_steps")
        if isinstance(warmup, int) and isinstance(steps, int) and warmup > steps:
            problems.append(f"runs.{name}: train_lm.warmup_steps = {warmup} is larger than its max_steps = {steps}")
    baselines = params.get("baselines") if isinstance(params.get("baselines"), Mapping) else {}
    for name in sorted(set(runs) & set(baselines)):
        problems.append(f"'{name}' names both a run (runs.{name}) and a baseline (baselines.{name}); rename one")
    if params.get("portable_cpu") and params_value(params, "train_lm.num_threads") is None:
        problems.append(
            "portable_cpu is true but train_lm.num_threads is null: LM bytes depend on the thread count, so set it "
            "to a number (e.g. 1) or set portable_cpu: false"
        )
    return problems


def load_params(path: str | Path, validate: bool = True) -> dict[str, Any]:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root, or pass --params)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    if validate:
        validate_params(params, source=str(path))
    return params


def section_to_dataclass(cls: type[T], section: Mapping[str, Any] | None) -> T:
    """Build dataclass `cls` from a params section, recursing into nested dataclass fields.

    Keys missing from the section take the dataclass defaults; unknown keys are an error (the schema catches them
    first for params files; this guards direct Python callers).
    """
    section = dict(section or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        raise ParamsError(f"{cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for name, value in section.items():
        nested = _dataclass_type(hints.get(name))
        if nested is not None and isinstance(value, Mapping):
            value = section_to_dataclass(nested, value)
        elif isinstance(value, list) and _is_tuple(hints.get(name)):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_type(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def dataclass_to_dict(obj: Any) -> dict[str, Any]:
    """Inverse of section_to_dataclass, with tuples as lists (YAML/JSON friendly)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        return value

    return convert(obj)


def profile_path(name: str, root: str | Path = ".") -> Path:
    return Path(root) / PROFILE_DIR_NAME / f"{name}.yaml"


def available_profiles(root: str | Path = ".") -> list[str]:
    return sorted(p.stem for p in (Path(root) / PROFILE_DIR_NAME).glob("*.yaml"))
