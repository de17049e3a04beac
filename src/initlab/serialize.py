"""Plans and rule sets to and from TOML or JSON, so that a training config can name its init.

The format is picked from the file extension (``.toml`` or ``.json``). A rule file::

    [initlab]
    format = 1
    seed = 0                      # optional metadata (seed, scheme, preset...)

    [rules]                       # parameter-name globs and roles, in order
    "*.c_proj.weight" = { scheme = "normal", std = 0.0025 }
    bias = "zeros"
    head = { scheme = "kaiming_normal", gain = 1.0 }

    [class_rules]                 # module classes, as dotted import paths
    "torch.nn.Conv2d" = { scheme = "kaiming_normal_fan_out", gain = 1.4142135623730951 }

A rule's value is a scheme name (or ``"keep"``), a table with ``scheme`` and the scheme's
options (``gain`` included), or the Python API's ``(name, kwargs)`` pair written as a 2-item list
(``["normal", {std = 0.02}]`` in TOML, ``["normal", {"std": 0.02}]`` in JSON). Predicates and callables cannot be written: they are code, and
:func:`save_rules` says which rule is one. A file written by :func:`save_plan` holds every
parameter's decision; :func:`load_rules` turns it into one exact-name rule per parameter, so the
same init can be re-planned (with the plan's seed, from :func:`load_init`).

Rule files are written as TOML by initlab itself (one line per rule, in order); plans, and reading
TOML before Python 3.11, need the ``io`` extra (``tomli-w`` writes plans; ``tomllib`` reads on
Python >= 3.11, ``tomli`` before): ``pip install initlab[io]``.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .errors import InitlabError
from .planning import Plan

__all__ = ["load_init", "load_rules", "rules_from_dict", "rules_to_dict", "save_plan", "save_rules"]

FORMAT = 1
_EXTS = (".toml", ".json")


# ---------------------------------------------------------------------------------------------
# files


def _ext(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in _EXTS:
        raise InitlabError(f"{path}: unknown extension {ext!r}; use .toml or .json")
    return ext


def _toml_writer() -> Any:
    try:
        import tomli_w
    except ImportError as exc:
        raise InitlabError(
            "writing TOML needs tomli-w: pip install initlab[io] (or write .json)"
        ) from exc
    return tomli_w


def _toml_reader() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise InitlabError(
            "reading TOML on Python < 3.11 needs tomli: pip install initlab[io] (or use .json)"
        ) from exc
    return tomli


def _toml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return (
            repr(v)
            if math.isfinite(v)
            else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
        )
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    raise TypeError(v)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _toml_rules(data: Mapping[str, Any]) -> str:
    """Rule files by hand: one line per rule, inline tables, in the rules' order (tomli-w would
    move every table after the plain values, and order matters within a kind of rule)."""
    lines = []
    for table, body in data.items():
        lines.append(f"[{table}]")
        for k, v in body.items():
            if isinstance(v, Mapping):
                inner = ", ".join(f"{_toml_key(a)} = {_toml_scalar(b)}" for a, b in v.items())
                lines.append(f"{_toml_key(k)} = {{ {inner} }}")
            elif v is not None:
                lines.append(f"{_toml_key(k)} = {_toml_scalar(v)}")
        lines.append("")
    return "\n".join(lines)


def _write(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    if _ext(path) == ".toml" and "entries" not in data:
        try:
            text = _toml_rules(data)
        except TypeError:  # metadata that is not a scalar
            text = _toml_writer().dumps(_drop_none(data))
    elif _ext(path) == ".toml":
        text = _toml_writer().dumps(_drop_none(data))
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    ext = _ext(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = _toml_reader().loads(text) if ext == ".toml" else json.loads(text)
    except (
        ValueError,
        TypeError,
    ) as exc:  # tomllib.TOMLDecodeError and JSONDecodeError are ValueErrors
        raise InitlabError(f"{path}: not valid {ext[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict) or not ({"rules", "class_rules", "entries"} & set(data)):
        found = ", ".join(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
        raise InitlabError(
            f"{path}: not an initlab rules file: it needs a [rules] table (parameter globs and "
            f"roles), a [class_rules] table (module classes) or a plan's entries; found: "
            f"{found or 'nothing'} (README: Rules files)"
        )
    return data


def _drop_none(v: Any) -> Any:
    """TOML has no null: drop ``None`` values from tables (and keep lists' shape)."""
    if isinstance(v, Mapping):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_drop_none(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


# ---------------------------------------------------------------------------------------------
# rules <-> plain data


def _class_path(cls: type) -> str:
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    if "<locals>" in cls.__qualname__:
        raise InitlabError(
            f"rule class {cls.__qualname__} is defined inside a function: it has no import path"
        )
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_class(path: str) -> type:
    if "." not in path:  # a bare class name: torch.nn's
        obj = getattr(nn, path, None)
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
        raise InitlabError(
            f"class rule {path!r}: torch.nn has no module class of that name; write a class of "
            'your own as its import path ("mypkg.blocks.Attention")'
        )
    module, _, name = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:  # a nested class: import the longest importable prefix
        parts = path.split(".")
        for i in range(len(parts) - 1, 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            break
        else:
            obj = None
    else:
        obj = getattr(obj, name, None)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise InitlabError(f"class rule {path!r}: no nn.Module class at that import path")
    return obj


def _value_to_data(label: str, value: Any) -> str | dict[str, Any]:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], Mapping)
    ):
        if "scheme" in value[1]:
            raise InitlabError(f"rule {label}: option name 'scheme' is reserved")
        for k, v in value[1].items():
            if not isinstance(v, (int, float, str, bool)):
                raise InitlabError(
                    f"rule {label}: option {k}={v!r} is not a number, string or bool"
                )
        return {"scheme": value[0], **value[1]}
    if callable(value):
        raise InitlabError(
            f"rule {label}: its value {value!r} is a callable (code), which cannot be saved; "
            "replace it with a scheme name or (name, kwargs), or add it in code after load_rules()"
        )
    raise InitlabError(
        f"rule {label}: value {value!r} is not a scheme name, a (name, kwargs) pair or 'keep'"
    )


def _value_from_data(label: str, value: Any) -> str | tuple[str, dict[str, Any]]:
    """A rule's value as the Python API takes it, from any form a file may hold: a scheme name
    or ``"keep"``; a table ``{scheme = "normal", std = 0.02}``; or the Python pair written as a
    2-item list ``["normal", {std = 0.02}]`` (a bare ``["normal"]`` is the name alone)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("scheme"), str):
        kwargs = {k: v for k, v in value.items() if k != "scheme"}
        return (value["scheme"], kwargs) if kwargs else value["scheme"]
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= 2 and isinstance(value[0], str):
        kwargs = value[1] if len(value) == 2 else {}
        if isinstance(kwargs, Mapping):
            if "scheme" in kwargs:
                raise InitlabError(f"rule {label}: option name 'scheme' is reserved")
            return (value[0], dict(kwargs)) if kwargs else value[0]
    raise InitlabError(
        f'rule {label}: {value!r} is not a rule value; write a scheme name ("zeros"), "keep", '
        "a table with 'scheme' ({scheme = \"normal\", std = 0.02}) or a [name, options] list "
        '(["normal", {std = 0.02}])'
    )


def rules_to_dict(rules: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    """Rules as plain data: ``{"rules": {glob_or_role: value}, "class_rules": {path: value}}``.

    >>> rules_to_dict({"bias": "zeros", nn.Linear: ("normal", {"std": 0.02})})
    {'rules': {'bias': 'zeros'}, 'class_rules': {'torch.nn.Linear': {'scheme': 'normal', 'std': 0.02}}}
    """
    named: dict[str, Any] = {}
    classes: dict[str, Any] = {}
    for key, value in rules.items():
        if isinstance(key, str):
            named[key] = _value_to_data(repr(key), value)
        elif isinstance(key, type) and issubclass(key, nn.Module):
            classes[_class_path(key)] = _value_to_data(key.__name__, value)
        elif callable(key):
            raise InitlabError(
                f"rule key {getattr(key, '__name__', key)!r} is a predicate (code), which cannot be saved; "
                "use a parameter-name glob, a role or a module class"
            )
        else:
            raise InitlabError(f"rule key {key!r} is not a glob, a role or a module class")
    return {"rules": named, "class_rules": classes}


def rules_from_dict(data: Mapping[str, Any]) -> dict[Any, Any]:
    """The inverse of :func:`rules_to_dict` (class paths imported)."""
    rules: dict[Any, Any] = {}
    for key, value in (data.get("rules") or {}).items():
        rules[key] = _value_from_data(repr(key), value)
    for path, value in (data.get("class_rules") or {}).items():
        rules[_import_class(path)] = _value_from_data(repr(path), value)
    return rules


def _rules_from_plan_data(data: Mapping[str, Any], path: str | Path) -> dict[Any, Any]:
    rules: dict[Any, Any] = {}
    for e in data["entries"]:
        name, scheme = e["name"], e["scheme"]
        if scheme == "custom":
            raise InitlabError(
                f"{path}: {name} was drawn by a callable rule ({e.get('source', '?')}), which a file "
                "cannot hold; pass that rule in code along with the loaded ones"
            )
        if scheme == "keep":
            rules[name] = "keep"
            continue
        kwargs = dict(e.get("kwargs") or {})
        if "gain" in e and "gain" not in kwargs:
            kwargs["gain"] = e["gain"]
        rules[name] = (scheme, kwargs) if kwargs else scheme
    return rules


# ---------------------------------------------------------------------------------------------
# public API


def save_rules(
    rules: Mapping[Any, Any], path: str | Path, *, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a rule set (and optional ``meta``: seed, scheme, preset...) to ``path`` (.toml/.json).

    Raises :class:`~initlab.errors.InitlabError` for a rule that is code (a predicate key or a
    callable value), naming it.
    """
    data = {"initlab": {"format": FORMAT, **dict(meta or {})}, **rules_to_dict(rules)}
    return _write(data, path)


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write a plan (:meth:`Plan.to_dict`: seed, default scheme, residual depth, every entry)."""
    return _write({"initlab": {"format": FORMAT, "kind": "plan"}, **plan.to_dict()}, path)


def load_init(path: str | Path) -> tuple[dict[Any, Any], dict[str, Any]]:
    """``(rules, meta)`` from a file of :func:`save_rules` or :func:`save_plan`.

    For a plan file the rules are one exact-name rule per parameter (scheme, options and gain
    as planned) and ``meta`` holds its ``seed`` and ``scheme``: ``plan(model, meta["scheme"],
    example=..., rules=rules, seed=meta["seed"])`` re-creates the same weights.
    """
    data = _read(path)
    meta = dict(data.get("initlab") or {})
    if "entries" in data:
        meta.update({k: data[k] for k in ("seed", "scheme", "model") if k in data})
        return _rules_from_plan_data(data, path), meta
    unknown = sorted(k for k in (data.get("rules") or {}) if not isinstance(k, str))
    if unknown:
        raise InitlabError(f"{path}: rule keys must be strings, got {unknown}")
    return rules_from_dict(data), meta


def load_rules(path: str | Path) -> dict[Any, Any]:
    """The rules of a file written by :func:`save_rules` or :func:`save_plan` (see :func:`load_init`)."""
    return load_init(path)[0]
