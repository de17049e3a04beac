"""The learned-scale core of GradInit and MetaInit: selection, batch plumbing, dict/tuple inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initlab import gradinit, metainit
from initlab.errors import InitlabError
from initlab.methods import _scales


class OneArg(nn.Module):
    """``forward(self, x)``: called as ``net(x)`` or ``net(**{"x": x})``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


class TwoArgs(nn.Module):
    """``forward(self, x, gate=None)``: a second tensor argument, by position or by keyword."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.g, self.b = nn.Linear(8, 16), nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        h = self.a(x)
        if gate is not None:
            h = h * torch.sigmoid(self.g(gate))
        return self.b(torch.tanh(h))


def _pairs(n: int = 4, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, 8, generator=g),
            torch.randn(batch, 4, generator=g),
            torch.randint(0, 3, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def _run(method: str, net: nn.Module, data: list) -> dict[str, float]:
    if method == "gradinit":
        return gradinit(net, F.cross_entropy, data, lr=0.1, iters=6, scale_lr=0.05).scales
    return metainit(net, F.cross_entropy, data, iters=6).scales


@pytest.mark.parametrize("method", ["gradinit", "metainit"])
def test_dict_inputs_give_the_same_scales_as_tensor_inputs(method: str) -> None:
    data = _pairs()
    ref_net = OneArg()
    ref = _run(method, ref_net, [(x, y) for x, _, y in data])
    net = OneArg()
    got = _run(method, net, [({"x": x}, y) for x, _, y in data])
    assert got == ref  # the same forward, only called by keyword: bit-identical
    assert any(s != 1.0 for s in ref.values())  # and the scales did move
    for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("method", ["gradinit", "metainit"])
def test_tuple_and_keyword_args_agree(method: str) -> None:
    data = _pairs()
    by_position = _run(method, TwoArgs(), [((x, m), y) for x, m, y in data])
    by_keyword = _run(method, TwoArgs(), [({"x": x, "gate": m}, y) for x, m, y in data])
    without_gate = _run(method, TwoArgs(), [({"x": x}, y) for x, _, y in data])
    assert by_position == by_keyword
    assert by_keyword != without_gate  # the keyword argument reached the forward


def test_select_skips_frozen_zero_norm_and_excluded() -> None:
    net = TwoArgs()
    net.g.weight.requires_grad_(False)
    with torch.no_grad():
        net.a.bias.zero_()
    s = _scales.select(net, lambda n, p: "no bias" if n == "b.bias" else None)
    assert s.names == ("a.weight", "g.bias", "b.weight")
    assert s.skipped == {"a.bias": "zero norm (as the official code)", "b.bias": "no bias"}
    assert s.others == ("a.bias", "b.bias") and set(s.frozen) == {"g.weight"}
    assert s.base_norm["b.weight"] == pytest.approx(float(net.b.weight.detach().norm()), rel=1e-12)


def test_cat_keeps_structure_and_refuses_mismatches() -> None:
    a = {"x": torch.zeros(2, 3), "flag": False, "pair": (torch.ones(1), torch.zeros(1))}
    b = {"x": torch.ones(5, 3), "flag": False, "pair": (torch.ones(2), torch.zeros(2))}
    out = _scales.cat(a, b, "t")
    assert out["x"].shape == (7, 3) and out["flag"] is False
    assert [t.shape[0] for t in out["pair"]] == [3, 3]
    assert torch.equal(out["x"][2:], b["x"])
    assert _scales.cat(None, None, "t") is None
    with pytest.raises(InitlabError, match="same structure"):
        _scales.cat({"x": torch.zeros(1)}, {"y": torch.zeros(1)}, "t")
    with pytest.raises(InitlabError, match="same structure"):
        _scales.cat({"flag": True}, {"flag": False}, "t")


def test_missing_loss_is_named() -> None:
    data = [({"x": x}, None) for x, _, _ in _pairs(2)]
    with pytest.raises(InitlabError, match=r"no \.loss"):
        gradinit(OneArg(), None, data, lr=0.1, iters=1)
    with pytest.raises(InitlabError, match=r"no \.loss"):
        metainit(OneArg(), None, data, iters=1)


# ---- a transformers causal LM called as model(**batch), batches of dicts ----------------------


def _gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        n_layer=1, n_embd=16, n_head=2, n_positions=16, vocab_size=32, bos_token_id=1, eos_token_id=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg)


def _ids(n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 32, (4, 12), generator=g) for _ in range(n)]


def _lm_loss(out: object, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy from the logits, as transformers computes ``.loss``."""
    logits = out.logits[:, :-1].float()  # type: ignore[attr-defined]
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


@pytest.mark.hf
def test_gradinit_on_gpt2_dict_batches() -> None:
    own = _gpt2()
    before = {n: p.detach().clone() for n, p in own.named_parameters()}
    res = gradinit(own, None, [{"input_ids": i, "labels": i} for i in _ids()], lr=0.1, iters=3)
    ref = gradinit(_gpt2(), _lm_loss, [({"input_ids": i}, i) for i in _ids()], lr=0.1, iters=3)
    assert len(res.history) == 3 and set(res.scales) == set(ref.scales)
    # the model's own .loss and the same loss from the logits: the same scales up to rounding
    for n, s in res.scales.items():
        assert s == pytest.approx(ref.scales[n], abs=1e-5)
    assert any(abs(s - 1.0) > 1e-3 for s in res.scales.values())
    for n, p in own.named_parameters():  # written back: theta = alpha theta0
        if n in res.scales:
            torch.testing.assert_close(p.detach(), res.scales[n] * before[n])


@pytest.mark.hf
def test_metainit_on_gpt2_dict_batches() -> None:
    own = _gpt2()
    before = {n: p.detach().clone() for n, p in own.named_parameters()}
    res = metainit(own, None, [{"input_ids": i, "labels": i} for i in _ids()], iters=3)
    assert len(res.history) == 3 and all(math.isfinite(h) for h in res.history)
    # transformers' Conv1D weights and the embeddings: every matrix tuned, by one scalar each
    assert set(res.scales) == {n for n, p in before.items() if p.dim() >= 2}
    for n, p in own.named_parameters():
        if n in res.scales:
            assert res.scales[n] != 1.0  # sign steps of lr 0.1 on the norm: every matrix moves
            torch.testing.assert_close(p.detach(), res.scales[n] * before[n])
        else:
            assert torch.equal(p.detach(), before[n])
