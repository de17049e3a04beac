"""Forward hooks and module modes for the length of a block, always taken off again.

Every method that runs a model to measure it (LSUV, MetaInit, the doctor's probes, the bench's
plots) needs the same two things, and needs them undone even when the block raises:

* :func:`forward_hooks` registers forward (pre-)hooks on some modules; :func:`capture_outputs`
  uses it to record what each module returned. The handles come off in ``finally``, also when a
  registration fails half-way.
* :func:`eval_mode` puts every module in eval mode, except the modules a predicate picks, which go
  to train mode. ``eval_mode(model, train_if=is_norm)`` (``initlab.graph.is_norm``) is "eval mode,
  norms in train mode": dropout off, batch statistics on, as GradInit's and LSUV's code run the
  network. On exit every module gets its own mode back, not only the root's (``model.train(was)``
  would flatten a model whose submodules were in mixed modes).

A leaf module: it knows no initlab layer type; which modules are norms is the graph's answer,
passed in as the predicate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from torch import nn

__all__ = ["capture_outputs", "eval_mode", "forward_hooks"]


@contextlib.contextmanager
def forward_hooks(
    modules: Iterable[nn.Module],
    hook: Callable[..., Any] | None = None,
    *,
    pre: Callable[..., Any] | None = None,
    with_kwargs: bool = False,
) -> Iterator[list[Any]]:
    """Register ``pre`` as a forward pre-hook and ``hook`` as a forward hook on each module.

    Yields the handles; every one is removed when the block ends, whether it returns or raises
    (and when registering a later hook fails). ``with_kwargs`` as in
    :meth:`torch.nn.Module.register_forward_hook`.

    >>> import torch
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> seen = []
    >>> with forward_hooks(net.modules(), lambda m, args, out: seen.append(type(m).__name__)):
    ...     _ = net(torch.zeros(1, 2))
    >>> seen, any(m._forward_hooks for m in net.modules())
    (['Linear', 'ReLU', 'Sequential'], False)
    """
    handles: list[Any] = []
    try:
        for module in modules:
            if pre is not None:
                handles.append(module.register_forward_pre_hook(pre, with_kwargs=with_kwargs))
            if hook is not None:
                handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))
        yield handles
    finally:
        while handles:
            handles.pop().remove()


def _detach(output: Any) -> Any:
    return output.detach() if hasattr(output, "detach") else output


@contextlib.contextmanager
def capture_outputs(
    modules: Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]],
    keep: Callable[[Any], Any] = _detach,
) -> Iterator[list[tuple[str, Any]]]:
    """Record ``(name, keep(output))`` for every forward call of the named modules, in call order.

    ``keep`` reduces what is stored (the default keeps the detached output; a statistic such as
    ``lambda y: float(y.std())`` keeps memory flat). A module called twice appears twice.

    >>> import torch
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with capture_outputs({"fc1": net[0], "fc2": net[2]}, keep=lambda y: tuple(y.shape)) as out:
    ...     _ = net(torch.zeros(4, 2))
    >>> out
    [('fc1', (4, 3)), ('fc2', (4, 1))]
    """
    pairs = list(modules.items() if isinstance(modules, Mapping) else modules)
    names = {id(m): n for n, m in pairs}
    out: list[tuple[str, Any]] = []

    def record(module: nn.Module, _args: Any, output: Any) -> None:
        out.append((names[id(module)], keep(output)))

    with forward_hooks((m for _, m in pairs), record):
        yield out


@contextlib.contextmanager
def eval_mode(
    model: nn.Module, *, train_if: Callable[[nn.Module], bool] | None = None
) -> Iterator[None]:
    """Every module of ``model`` in eval mode, except those ``train_if`` picks (train mode).

    As ``model.eval()`` then ``m.train()`` for each picked module (so a module's own ``train``
    override runs). On exit, returning or raising, each module gets back the mode it had. Only the ``training``
    flags change: a norm in train mode still updates its running statistics on each forward pass,
    so a caller that must not change them keeps them in a transaction or restores them.

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    >>> with eval_mode(net, train_if=lambda m: isinstance(m, nn.BatchNorm1d)):
    ...     [m.training for m in net.modules()]
    [False, False, True, False]
    >>> [m.training for m in net.modules()]
    [True, True, True, True]
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        if train_if is not None:
            for m in model.modules():
                if train_if(m):
                    m.train()
        yield
    finally:
        for m, training in modes.items():
            m.training = training
