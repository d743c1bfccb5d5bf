"""YAML job configs parsed into validated dataclasses.

One YAML per job, every field has a default, ``--set a.b=c`` overrides a field. Anything wrong
(unknown key, wrong type, bad value) raises :class:`ConfigError` naming the dotted field and,
where we know it, the fix, before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config field is wrong. The message starts with the dotted field name."""

    def __init__(self, field: str, problem: str, fix: str | None = None):
        self.field = field
        msg = f"config field '{field}': {problem}"
        if fix:
            msg += f" (fix: {fix})"
        super().__init__(msg)


def _coerce(value: Any, typ: Any, field: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError:
                continue
        raise ConfigError(field, f"{value!r} matches none of {typ}")
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {type(value).__name__}")
        return from_dict(typ, value, prefix=field)
    if origin is list:
        (item,) = typing.get_args(typ) or (Any,)
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(field, f"expected a list, got {value!r}")
        return [_coerce(v, item, f"{field}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return dict(value)
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(field, f"expected true or false, got {value!r}")
    if typ is int:  # .inf and .nan are YAML floats with no integer value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or int(value) != value
        ):
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return int(value)
    if typ is float:  # .inf may mean "no limit"; .nan compares false with every bound
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(field, f"expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively, naming any bad field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (data or {}).items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                dotted, "unknown field", f"valid fields here: {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not exc.field.startswith(prefix + "."):
            raise ConfigError(f"{prefix}.{exc.field}", str(exc).split(": ", 1)[1]) from None
        raise


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def _yaml_problem(exc: yaml.YAMLError) -> tuple[str, yaml.Mark | None]:
    """What YAML refused, in a line, and where (a mark whose ``line`` and ``column`` count
    from 0; None when YAML does not say)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "not valid YAML"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in problem:
            problem = problem.replace("could not determine a constructor for the ", "")
            problem = f"{problem.replace('tag:yaml.org,2002:', '!!')} "
            problem += "is not allowed (a config holds plain values, no Python objects)"
        return problem, exc.problem_mark or exc.context_mark
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__, None


def parse_yaml(text: str, *, field: str = "<file>", source: str | Path | None = None) -> Any:
    """``yaml.safe_load(text)``, with what YAML refuses (bad syntax; a tag such as
    ``!!python/object``, which is never constructed) raised as :class:`ConfigError` naming
    ``field`` and, for a file, ``source`` with the line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem, mark = _yaml_problem(exc)
        if source is not None:
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(field, f"{source}{at}: {problem}") from None
        at = f" (at character {mark.column + 1})" if mark and "\n" not in text else ""
        raise ConfigError(
            field,
            f"{text!r} is not a plain YAML value{at}: {problem}",
            "write a number, a string, [a, b] or {k: v}; quote a string that holds brackets",
        ) from None


def apply_override(data: dict, assignment: str) -> None:
    """Apply one ``a.b.c=value`` assignment (value parsed as YAML) to a nested mapping."""
    if "=" not in assignment:
        raise ConfigError(assignment, "an override must look like 'field.sub=value'")
    path, raw = assignment.split("=", 1)
    value = parse_yaml(raw, field=path.strip()) if raw != "" else ""
    node = data
    parts = path.strip().split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(path, f"'{part}' is not a group of fields")
        node = nxt
    node[parts[-1]] = value


def merge(base: dict, overlay: dict) -> dict:
    """Deep-merge ``overlay`` into ``base`` (mappings merge, anything else replaces)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("<file>", f"no config file at {p}")
    loaded = parse_yaml(p.read_text(), source=p)
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("<file>", f"{p} must hold a mapping of fields at the top level")
    return loaded or {}


def load_config(
    cls: type[T],
    path: str | Path | list[str | Path] | None,
    overrides: list[str] | None = None,
) -> T:
    """Read one YAML or several (later files override earlier ones, e.g. a job config and a
    models overlay), apply ``--set`` overrides, validate."""
    paths = [] if path is None else path if isinstance(path, list) else [path]
    data: dict = {}
    for p in paths:
        data = merge(data, _read_yaml(p))
    for assignment in overrides or []:
        apply_override(data, assignment)
    return from_dict(cls, data)


def require(cond: bool, field: str, problem: str, fix: str | None = None) -> None:
    """Validation helper for ``__post_init__``."""
    if not cond:
        raise ConfigError(field, problem, fix)


#: fields that say where and how a job runs, not what it makes
RUN_FIELDS = ("ray", "log_level", "keep_work", "output")


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able value (key order does not matter)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(cfg: Any, ignore: tuple[str, ...] = RUN_FIELDS, blank: tuple[str, ...] = ()) -> str:
    """What decides a job's result: its config less the ``ignore``d top-level fields. A rerun
    with the same hash may finish an earlier run's work; another hash may not. ``blank`` names
    dotted fields (input paths) left out because the caller fingerprints them instead."""
    d = dataclasses.asdict(cfg)
    for k in ignore:
        d.pop(k, None)
    for dotted in blank:
        *parents, last = dotted.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = "<input>"
    return digest(d)
