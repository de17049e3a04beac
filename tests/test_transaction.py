"""Transactions: on an exception the model is exactly as it was; on success the changes stay."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from initlab.transaction import snapshot, transaction


class Boom(RuntimeError):
    pass


def make_model() -> nn.Module:
    torch.manual_seed(0)  # test fixture only: the library never seeds the global RNG
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    model(torch.randn(16, 4)).sum().backward()  # grads and running stats are non-trivial
    return model


def state_of(model: nn.Module) -> dict:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {
            k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()
        },
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "ids": {k: id(p) for k, p in model.named_parameters()},
        "modes": [m.training for m in model.modules()],
        "names": [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()],
        "modules": [n for n, _ in model.named_modules()],
    }


def assert_same(model: nn.Module, before: dict) -> None:
    after = state_of(model)
    assert after["names"] == before["names"]
    assert after["modules"] == before["modules"]
    assert after["ids"] == before["ids"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["modes"] == before["modes"]
    for k, v in before["tensors"].items():
        assert after["tensors"][k].dtype == v.dtype and torch.equal(after["tensors"][k], v), k
    for k, g in before["grads"].items():
        assert (after["grads"][k] is None) == (g is None), k
        if g is not None:
            assert torch.equal(after["grads"][k], g), k


def test_exception_restores_everything():
    model = make_model()
    before = state_of(model)
    calls = []
    with pytest.raises(Boom), transaction(model):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(3)
            model[1].running_mean.fill_(7)
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(False)
        model.eval()
        model[0].register_forward_hook(lambda *a: calls.append("fwd"))
        model[0].register_forward_pre_hook(lambda *a: calls.append("pre"))
        model.register_full_backward_hook(lambda *a: calls.append("bwd"))
        raise Boom
    assert_same(model, before)
    model(torch.randn(3, 4))
    assert calls == []  # hooks added inside the block are gone


def test_success_keeps_the_changes():
    model = make_model()
    with transaction(model):
        with torch.no_grad():
            model[0].weight.zero_()
        model.eval()
    assert torch.count_nonzero(model[0].weight) == 0
    assert not model.training


def test_replaced_and_resized_tensors_come_back():
    model = make_model()
    before = state_of(model)
    original = model[0].weight
    with pytest.raises(Boom), transaction(model):
        model[0].weight = nn.Parameter(torch.zeros(8, 4))  # a new object
        model[3].weight.data = torch.zeros(5, 5)  # a new shape behind the same object
        model.double()  # a new dtype
        raise Boom
    assert model[0].weight is original
    assert_same(model, before)


def test_added_parameters_buffers_and_modules_are_removed():
    model = make_model()
    before = state_of(model)
    with pytest.raises(Boom), transaction(model):
        model[0].register_parameter("scale", nn.Parameter(torch.ones(1)))
        model[0].register_buffer("seen", torch.zeros(1))
        model.add_module("extra", nn.Linear(2, 2))
        del model[3].bias
        raise Boom
    assert_same(model, before)
    assert not hasattr(model[0], "scale") and not hasattr(model[0], "seen")


def test_tied_parameters_stay_tied():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    saved = a.weight.detach().clone()
    with pytest.raises(Boom), transaction(model):
        with torch.no_grad():
            a.weight.add_(1)
        raise Boom
    assert model[0].weight is model[1].weight
    assert torch.equal(a.weight, saved)


def test_tensor_hooks_added_inside_are_removed():
    model = nn.Linear(3, 1)
    calls = []
    with pytest.raises(Boom), transaction(model):
        model.weight.register_hook(lambda g: calls.append("grad"))
        raise Boom
    model(torch.randn(2, 3)).sum().backward()
    assert calls == []


def test_base_exceptions_also_restore():
    model = make_model()
    before = state_of(model)
    with pytest.raises(KeyboardInterrupt), transaction(model):
        with torch.no_grad():
            model[0].weight.zero_()
        raise KeyboardInterrupt
    assert_same(model, before)


def test_meta_parameters_survive_a_failed_materialization():
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    original = model.weight
    with pytest.raises(Boom), transaction(model):
        model.to_empty(device="cpu")
        raise Boom
    assert model.weight is original and model.weight.is_meta


def test_snapshot_is_a_copy():
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    state = snapshot(model)
    with torch.no_grad():
        model.weight.zero_()
    state.restore()
    assert torch.equal(model.weight, before)


def test_replaced_modules_and_recorded_attributes_come_back():
    """A submodule swapped for a wrapper, and plain attributes set through the state, are undone."""
    model = make_model()
    inner, enc = (
        model[0],
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1),
    )
    model.add_module("enc", enc)
    before = state_of(model)
    nested = enc.use_nested_tensor
    with pytest.raises(Boom), transaction(model) as state:
        model._modules["0"] = nn.Sequential(inner, nn.Identity())
        model.enc.layers._modules["0"] = nn.Identity()
        state.set_attribute(enc, "use_nested_tensor", not nested)
        state.set_attribute(enc, "initlab_new_attribute", 1)
        raise Boom
    assert model[0] is inner and isinstance(model.enc.layers[0], nn.TransformerEncoderLayer)
    assert enc.use_nested_tensor == nested and not hasattr(enc, "initlab_new_attribute")
    assert_same(model, before)


def test_recorded_attributes_stay_on_success():
    model = make_model()
    with transaction(model) as state:
        state.set_attribute(model, "initlab_flag", 3)
    assert model.initlab_flag == 3
