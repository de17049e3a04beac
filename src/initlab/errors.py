"""The library's one exception type and the helpers that make its messages useful."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ForwardError", "InitlabError", "check_choice", "closest"]


class InitlabError(ValueError):
    """Raised for bad input to initlab: the message names the problem and the fix.

    It subclasses :class:`ValueError`, so code that already catches ``ValueError`` keeps working.
    """


class ForwardError(InitlabError):
    """The model's forward raised on the example initlab passed it.

    ``str(err)`` is ``cause`` then ``hint``; ``cause`` names the user's exception and where it
    was raised (module path, file and line); ``hint`` says how to pass a different example in
    Python, so a command line can show its own flags instead.
    """

    def __init__(self, cause: str, hint: str) -> None:
        super().__init__(f"{cause}; {hint}")
        self.cause = cause
        self.hint = hint


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``word`` (difflib ratio >= 0.5), or ``None``.

    >>> closest("kaiming_norml", ["kaiming_normal", "xavier_normal"])
    'kaiming_normal'
    """
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a helpful :class:`InitlabError`.

    >>> check_choice("mode", "fan_in", ["fan_in", "fan_out"])
    'fan_in'
    """
    choices = list(choices)
    if value in choices:
        return value
    hint = closest(str(value), choices)
    did_you_mean = f" Did you mean {hint!r}?" if hint else ""
    raise InitlabError(
        f"unknown {what} {value!r}.{did_you_mean} Valid values: {', '.join(map(repr, choices))}."
    )
