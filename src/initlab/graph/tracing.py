"""The entry points: :func:`trace` (one traced pass, on meta when it can) and :func:`run_forward`."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InitlabError, check_choice
from ..hooks import eval_mode, forward_hooks
from .activations import activation_module_name
from .branches import _branches, _embedding_groups
from .meta import _restoring_module_state, _swap_in_copies
from .tracer import _EMPTY, _Tracer
from .types import _LEAF_TYPES, Graph, Layer, is_norm


def _kind(module: nn.Module) -> str:
    own = [p for p in module._parameters.values() if p is not None]
    if parametrize.is_parametrized(module):
        own += list(module.parametrizations.parameters())
    if own and all(p.numel() == 1 for p in own) and not isinstance(module, _LEAF_TYPES):
        return "scalar"  # a learnable scalar multiplier or bias (Fixup, SkipInit): transparent
    if is_norm(module):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.PReLU,)):
        return "activation"
    return "weight"


def _find_layers(model: nn.Module) -> tuple[dict[str, Layer], list[str]]:
    """Leaf parametrized modules, and the 'loose' parameters of containers that also own some.

    One walk of ``named_modules`` (duplicates kept, so a module reached twice is skipped under
    its later names) with two memos, so the cost is linear in the number of modules: whether a
    module's subtree holds a parameter, and the names of the leaves already taken (a name is
    skipped when one of its dotted prefixes is such a leaf).
    """
    layers: dict[str, Layer] = {}
    loose: list[str] = []
    inside_leaf: set[str] = set()
    seen: set[int] = set()
    has_params: dict[int, bool] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if inside_leaf and _under(name, inside_leaf):
            continue
        own = [(n, p) for n, p in module._parameters.items() if p is not None]  # not the
        # generator walk of named_parameters(recurse=False): ~10x the cost, once per module
        has_param_children = any(_holds_params(c, has_params) for c in module.children())
        # a parametrized module (weight norm, spectral norm) is one layer: its tensors live in
        # its ``parametrizations`` child, and are planned as the module's own
        leaf = isinstance(module, _LEAF_TYPES) or parametrize.is_parametrized(module)
        if leaf or (own and not has_param_children):
            if id(module) not in seen:
                seen.add(id(module))
                layers[name] = Layer(name, module, _kind(module))
            inside_leaf.add(name)
        elif own:
            prefix = f"{name}." if name else ""
            loose.extend(prefix + n for n, _ in own)
    return layers, loose


def _under(name: str, leaves: set[str]) -> bool:
    """Whether a proper dotted prefix of ``name`` (``a``, ``a.b`` of ``a.b.c``) is in ``leaves``."""
    i = name.find(".")
    while i != -1:
        if name[:i] in leaves:
            return True
        i = name.find(".", i + 1)
    return False


def _holds_params(module: nn.Module, memo: dict[int, bool]) -> bool:
    """Whether ``module`` or a submodule owns a parameter; memoized by module id."""
    key = id(module)
    if key not in memo:
        memo[key] = any(p is not None for p in module._parameters.values()) or any(
            _holds_params(c, memo) for c in module.children()
        )
    return memo[key]


def _example_args(example: object) -> tuple[tuple, dict]:
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, tuple):
        return example, {}
    if isinstance(example, list) and example and all(isinstance(e, torch.Tensor) for e in example):
        return tuple(example), {}
    return (example,), {}


def _raised_at(model: nn.Module, exc: BaseException) -> str:
    """Where in ``model`` ``exc`` was raised: the innermost submodule whose ``forward`` was running
    (its qualified name and class) and the innermost frame outside torch (``file:line in fn``)."""
    import os
    import traceback

    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    skip = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    module = frame_at = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            module = owner
        code = frame.f_code
        if not code.co_filename.startswith(skip):
            frame_at = f"{os.path.basename(code.co_filename)}:{line} in {code.co_name}"
    parts = []
    if module is not None:
        name = names[id(module)]
        parts.append(
            f"in module {name!r} ({type(module).__name__})"
            if name
            else f"in {type(module).__name__}"
        )
    if frame_at:
        parts.append(f"at {frame_at}")
    return " ".join(parts)


def run_forward(model: nn.Module, example: object) -> object:
    """Call ``model`` on ``example`` (a tensor, a tuple of args, or a dict of kwargs).

    A failure (any ``Exception``) is re-raised as :class:`~initlab.errors.ForwardError` that
    names the user's exception, the submodule and source line that raised it, a meta-device,
    device or dtype mismatch when there is one, and what initlab passed; ``KeyboardInterrupt``
    propagates unchanged.
    """
    from ..errors import ForwardError
    from ..placement import placement_problem

    args, kwargs = _example_args(example)
    try:
        return model(*args, **kwargs)
    except (InitlabError, torch.OutOfMemoryError):
        raise
    except Exception as exc:
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args]
        where = _raised_at(model, exc)
        cause = f"{type(model).__name__}.forward raised {type(exc).__name__}{' ' + where if where else ''}: {exc}"
        problem = placement_problem(model, example, needs_values=False)
        if problem:
            cause = f"{problem} ({cause})"
        hint = (
            f"initlab called model(*args, **kwargs) with args {shapes} and kwargs {sorted(kwargs)}; "
            "if the example did not fit, pass example= as the exact input of one forward call "
            "(a tensor, a tuple of positional args, or a dict of keyword args)"
        )
        raise ForwardError(cause, hint) from exc


TraceMode = Literal["meta", "real"]


def trace(model: nn.Module, example: object, *, forward: TraceMode = "meta") -> Graph:
    """Trace one forward pass of ``model`` on ``example`` and return its :class:`Graph`.

    The pass computes nothing: with ``forward="meta"`` (the default) it runs on meta copies of the
    parameters and buffers and a meta copy of the example (:func:`torch.func.functional_call`), so
    tracing a ResNet-50 costs about what tracing its meta twin does, whatever the example's size.
    The graph is the one a real pass records (only shapes and the order of calls matter). A model
    that needs values (``.item()``, ``nonzero``, Python branches on a tensor, CPU tensors made in
    ``forward``) fails on meta; it is then traced with a real forward pass, and
    :attr:`Graph.note` says why. ``forward="real"`` asks for the real pass directly. A model whose
    parameters are already on meta is traced on meta; when that fails too (a mask's ``.item()``,
    a meta buffer copied next to the input), on zeros standing in for its tensors (stride-0
    zeros on the example's device, which cost no memory; allocated ones only when a kernel
    refuses those), and :attr:`Graph.note` says so.

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    >>> g = trace(net, torch.randn(2, 4))
    >>> [(la.name, la.activation, sorted(la.roles)) for la in g]
    [('0', 'tanh', []), ('2', None, ['head'])]
    """
    if not isinstance(model, nn.Module):
        raise InitlabError(f"expected an nn.Module, got {type(model).__name__}")
    check_choice("forward", forward, ["meta", "real"])
    on_meta = _all_on_meta(model)
    if on_meta:
        try:
            return _trace(model, example, meta=True)
        except Exception as exc:  # it reads values, and the model has none: trace on zeros
            return _trace_on_zeros(model, example, exc)
    if forward == "real":
        return _trace(model, example, meta=False)
    try:
        return _trace(model, example, meta=True)
    except Exception as exc:  # any failure on meta means: it needs values; trace for real
        graph = _trace(model, example, meta=False)
        graph.note = _real_note(exc, "")
        return graph


def _all_on_meta(model: nn.Module) -> bool:
    """Whether ``model`` has tensors and every parameter and buffer is on the meta device (read
    up to the first that is not: a model in memory answers at its first tensor)."""
    found = False
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.device.type != "meta":
            return False
        found = True
    return found


def _trace_on_zeros(model: nn.Module, example: object, meta_failure: Exception) -> Graph:
    """Trace a model built on meta whose meta pass failed: a real pass on zeros standing in for
    its parameters and buffers (stride-0 zeros, free; allocated zeros when a kernel refuses
    those). The graph depends on shapes and the order of calls only, not on the values."""
    device = _example_device(example)
    try:
        graph = _trace(model, example, meta=False, zeros_on=device)
    except Exception:
        graph = _trace(model, example, meta=False, zeros_on=device, dense=True)
    graph.note = _real_note(meta_failure, "on zeros standing in for its meta tensors")
    return graph


def _real_note(exc: Exception, how: str) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"traced with a real forward pass{' ' + how if how else ''}: the meta pass failed "
        f"({type(exc).__name__}: {first[:200]}); the model reads values in forward, so planning "
        "costs one forward pass at the example's size"
    )


def _example_device(example: object) -> torch.device:
    """The device of the example's first tensor (CPU when it holds none)."""
    from torch.utils._pytree import tree_leaves

    tensors = [t for t in tree_leaves(example) if isinstance(t, torch.Tensor)]
    return tensors[0].device if tensors else torch.device("cpu")


def _trace(model: nn.Module, example: object, *, meta: bool,
           zeros_on: torch.device | None = None, dense: bool = False) -> Graph:  # fmt: skip
    """One traced pass; ``meta``: on meta copies of the state and the example. ``zeros_on``: a
    real pass on zeros standing in for the state (a model built on meta, whose forward reads
    values: a mask's ``.item()``, a buffer copied to the input's device); ``dense``: allocated."""
    layers, loose = _find_layers(model)
    owners: dict[int, str] = {}
    shared: dict[str, list[str]] = {}
    first_name: dict[int, str] = {}
    named = list(model.named_parameters(remove_duplicate=False))
    for pname, p in named:
        if id(p) in first_name and first_name[id(p)] != pname:
            shared.setdefault(first_name[id(p)], []).append(pname)
        first_name.setdefault(id(p), pname)
    for name, layer in layers.items():
        for p in layer.module.parameters():
            owners.setdefault(id(p), name)
    slopes = {
        id(la.module): float(la.module.weight.detach().float().mean())
        for la in layers.values()
        if isinstance(la.module, nn.PReLU) and la.module.weight.device.type != "meta"
    }
    on_copies = zeros_on is not None or (meta and not _all_on_meta(model))
    with contextlib.ExitStack() as stack:
        if on_copies:  # the pass runs on copies of the state, put in the modules' slots
            stack.enter_context(_restoring_module_state(model))  # ... and the originals back
            for original, copy in _swap_in_copies(model, zeros_on, dense).items():
                if original in owners:
                    owners.setdefault(id(copy), owners[original])
        tracer, output = _traced_pass(model, example, layers, owners, slopes, meta, on_copies)
    return _graph(model, tracer, output, layers, loose, first_name, shared)


def _traced_pass(model: nn.Module, example: object, layers: dict[str, Layer],
                 owners: dict[int, str], slopes: dict[int, float], meta: bool,
                 on_copies: bool) -> tuple[_Tracer, object]:  # fmt: skip
    """One forward pass of ``model`` under the tracer: every layer and activation module hooked,
    eval mode, the RNG forked, warnings silenced; returns the tracer and the output.
    ``on_copies``: the state is swapped for copies, so a failure is raised as it is (the caller
    falls back to another pass) rather than explained as :func:`run_forward` does."""
    tracer = _Tracer(model, layers, owners, slopes)
    tracer.meta = meta
    act_modules = []
    for module in model.modules():
        act = activation_module_name(module)
        if act is not None and id(module) not in tracer.by_module:
            tracer.act_modules[id(module)] = act
            act_modules.append(module)
    args, kwargs = _example_args(example)
    with (
        forward_hooks(act_modules, tracer.act_post_hook, pre=tracer.act_pre_hook, with_kwargs=True),
        forward_hooks([layer.module for layer in layers.values()], tracer.post_hook,
                      pre=tracer.pre_hook, with_kwargs=True),
        eval_mode(model),
        torch.random.fork_rng(devices=[]),
        warnings.catch_warnings(),
    ):  # fmt: skip
        warnings.simplefilter("ignore")  # e.g. the transformer fast-path notice
        tracer.put((args, kwargs), _EMPTY)
        with tracer:
            output = model(*args, **kwargs) if on_copies else run_forward(model, example)
    return tracer, output


def _graph(model: nn.Module, tracer: _Tracer, output: object, layers: dict[str, Layer],
           loose: list[str], first_name: dict[int, str], shared: dict[str, list[str]]) -> Graph:  # fmt: skip
    """The graph of a traced pass: roles (norms, embeddings, residual branch ends, the head),
    unreached layers, embedding sums and the longest path."""
    # roles
    for layer in layers.values():
        if layer.kind in ("norm", "embedding"):
            layer.roles.add(layer.kind)
    branches = _branches(tracer.adds, layers)
    for b in branches:
        layers[b.last].roles.add("residual_out")
    # the head: feeds the output through no other weight layer, and not merely along skip paths
    for info in tracer.infos(output):
        for source in info.pending:
            layer = layers[source]
            tied_head = layer.kind == "embedding" and any(
                f != "embedding" for f in tracer.functional.get(source, [])
            )
            direct = layer.kind == "weight" and not layer.consumed
            if (direct or tied_head) and "residual_out" not in layer.roles:
                layer.roles.add("head")
    returned = {source for info in tracer.infos(output) for source in info.pending}
    for layer in layers.values():
        layer.normalized = (layer.kind == "weight" and layer.name not in returned
                            and tracer.normalized(layer.name))  # fmt: skip
    unreached = [la.name for la in layers.values() if la.calls == 0]
    sums = _embedding_groups(tracer.sums, layers, list(first_name.values()))
    longest = max((path.weight for info in tracer.infos(output) for path in info.streams.values()),
                  default=0)  # fmt: skip
    return Graph(model, layers, branches, shared, tracer.functional, unreached, loose, sums,
                 longest_path=longest)  # fmt: skip
