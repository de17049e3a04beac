"""Hooks and modes for a block: handles always come off, every module gets its own mode back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initlab.graph import is_norm
from initlab.hooks import capture_outputs, eval_mode, forward_hooks


class Boom(RuntimeError):
    pass


def _net() -> nn.Sequential:
    torch.manual_seed(0)  # test fixture only
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2),
        nn.LayerNorm(2),
    )  # fmt: skip


def _hook_counts(model: nn.Module) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def test_forward_hooks_run_inside_and_come_off_on_exception() -> None:
    net = _net()
    net[0].register_forward_hook(lambda *a: None)  # the user's own hook stays
    before = _hook_counts(net)
    pre, post = [], []
    with (
        pytest.raises(Boom),
        forward_hooks(
            list(net), lambda m, a, o: post.append(m), pre=lambda m, a: pre.append(m)
        ) as handles,
    ):
        assert len(handles) == 2 * len(net)
        net(torch.randn(3, 4))
        raise Boom
    assert pre == list(net) and post == list(net)  # each ran once, in call order
    assert _hook_counts(net) == before


def test_forward_hooks_come_off_when_a_registration_fails_half_way() -> None:
    net = _net()
    before = _hook_counts(net)
    with pytest.raises(AttributeError), forward_hooks([net[0], net[1], object()], print):  # type: ignore[list-item]
        pass  # never reached: the third registration fails
    assert _hook_counts(net) == before


def test_capture_outputs_records_each_call_with_its_name() -> None:
    net = _net().eval()
    x = torch.randn(5, 4)
    with capture_outputs({"fc1": net[0], "fc2": net[4]}) as out:
        y = net(x)
    assert [n for n, _ in out] == ["fc1", "fc2"]
    assert torch.equal(out[0][1], net[0](x)) and not out[0][1].requires_grad
    assert torch.allclose(net[5](out[1][1]), y)
    assert _hook_counts(net) == [(0, 0)] * len(list(net.modules()))


def test_eval_mode_except_norms_and_every_mode_restored_on_exception() -> None:
    net = _net()
    net.train()
    net[3].eval()  # mixed modes: model.train(was) would not restore them
    net[5].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(Boom), eval_mode(net, train_if=is_norm):
        assert [m.training for m in net.modules()] == [
            False, False, True, False, False, False, True,
        ]  # fmt: skip
        raise Boom
    assert [m.training for m in net.modules()] == before


def test_eval_mode_without_predicate_is_all_eval_and_dropout_is_off() -> None:
    net = _net()
    x = torch.randn(6, 4)
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
        a, b = net(x), net(x)
    assert torch.equal(a, b)  # no dropout, running statistics: deterministic
    assert all(m.training for m in net.modules())
