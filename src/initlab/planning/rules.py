"""Rules: a rule key's kind (name glob, module class, predicate, role), its value, precedence."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InitlabError
from ..schemes import get_scheme

ROLES = ("head", "residual_out", "embedding", "bias", "norm", "weight", "other")
_ROLE_ORDER = {r: i for i, r in enumerate(ROLES)}
RuleValue = str | tuple[str, Mapping[str, Any]] | Callable[..., Any]


@dataclass(frozen=True)
class _Rule:
    kind: int  # 0 name, 1 class, 2 predicate, 3 role
    key: Any
    value: RuleValue
    label: str
    index: int


def _parse_rules(rules: Mapping[Any, RuleValue] | None) -> list[_Rule]:
    parsed = []
    for i, (key, value) in enumerate((rules or {}).items()):
        if isinstance(key, str) and key in ROLES:
            parsed.append(_Rule(3, key, value, f"rule {key!r}", i))
        elif isinstance(key, str):
            parsed.append(_Rule(0, key, value, f"rule {key!r}", i))
        elif isinstance(key, type) and issubclass(key, nn.Module):
            parsed.append(_Rule(1, key, value, f"rule {key.__name__}", i))
        elif callable(key):
            label = getattr(key, "__name__", "predicate")
            parsed.append(_Rule(2, key, value, f"rule {label}", i))
        else:
            raise InitlabError(
                f"rule key {key!r} is not a parameter-name glob, a module class, a predicate or a "
                f"role ({', '.join(ROLES)})"
            )
        _check_value(parsed[-1])
    return parsed


def _check_value(rule: _Rule) -> None:
    v = rule.value
    if callable(v) and not isinstance(v, str):
        return
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], Mapping):
        name = v[0]
    elif isinstance(v, str):
        name = v
    else:
        raise InitlabError(
            f"{rule.label}: value {v!r} is not a scheme name, a (name, kwargs) pair, 'keep' or a callable"
        )
    if name != "keep":
        get_scheme(name)


def _matches(
    rule: _Rule, names: tuple[str, ...], module: nn.Module, roles: tuple[str, ...]
) -> bool:
    if rule.kind == 0:
        return any(fnmatch.fnmatchcase(n, rule.key) for n in names)
    if rule.kind in (1, 2) and roles == ("bias",):
        return False  # module rules are for weights; biases follow the 'bias' role or a name
    if rule.kind == 1:
        return isinstance(module, rule.key)
    if rule.kind == 2:
        try:
            return bool(rule.key(module))
        except Exception as exc:
            raise InitlabError(
                f"{rule.label} raised {type(exc).__name__}: {exc} on {type(module).__name__}"
            ) from exc
    return rule.key in roles


def _matching(rules: Sequence[_Rule], names: tuple[str, ...], module: nn.Module,
              roles: tuple[str, ...]) -> list[_Rule]:  # fmt: skip
    """Every rule that matches the parameter, in the order listed."""
    return [r for r in rules if _matches(r, names, module, roles)]


def _winner(hits: Sequence[_Rule]) -> _Rule | None:
    """The rule that decides among ``hits``: the highest kind (name, class, predicate, role);
    among role rules, the parameter's most specific role; then the rule listed last."""
    if not hits:
        return None
    best = min(r.kind for r in hits)
    hits = [r for r in hits if r.kind == best]
    if best == 3:  # role rules: the parameter's most specific role wins (head before weight)
        top = min(_ROLE_ORDER[r.key] for r in hits)
        hits = [r for r in hits if _ROLE_ORDER[r.key] == top]
    return hits[-1]
