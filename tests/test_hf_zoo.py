"""Regressions from the held-out architectures survey (``benchmarks/zoo.py``, issue #14): one
test per general fix, each on the cheapest transformers model that showed it (built from a small
config, nothing downloaded)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip(
    "transformers",
    reason="the transformers-based tests need the optional extra: pip install transformers",
)

from initlab.graph import trace  # noqa: E402
from initlab.planning import init  # noqa: E402

pytestmark = pytest.mark.hf

V = 256
IDS = torch.randint(3, V, (4, 16), generator=torch.Generator().manual_seed(0))
SMALL = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
             num_key_value_heads=2, max_position_embeddings=64, vocab_size=V, pad_token_id=1, bos_token_id=1,
             eos_token_id=1)  # fmt: skip


def _build(cls: str, config: str, device: str = "cpu", **kw) -> torch.nn.Module:
    cfg = getattr(transformers, config)(**{**SMALL, **kw})
    with torch.random.fork_rng(), torch.device(device):
        torch.manual_seed(0)
        return getattr(transformers, cls)(cfg)


def _loss(model: torch.nn.Module, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (8, 32), generator=g)
    with torch.no_grad():
        logits = model.train()(input_ids=ids).logits
    target = torch.randint(0, V, logits.shape[:-1], generator=g)
    return float(F.cross_entropy(logits.reshape(-1, V), target.reshape(-1)))


@pytest.mark.parametrize(
    "cls, config, kw",
    [
        # masking_utils calls .item() on a mask built on the model's (meta) device
        ("BioGptForCausalLM", "BioGptConfig", {}),
        # the embeddings copy a meta buffer (token_type_ids) next to the input ids
        ("RobertaForMaskedLM", "RobertaConfig", {}),
        # grouped_mm refuses stride-0 stand-ins: traced on allocated zeros
        ("MixtralForCausalLM", "MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2)),
    ],
)
def test_meta_model_whose_forward_reads_values_is_traced_on_zeros_and_runs(cls, config, kw):
    model = _build(cls, config, "meta", **kw)
    graph = trace(model, {"input_ids": IDS})
    assert "on zeros" in (graph.note or "")
    assert len(graph.branches) == 4  # 2 layers x (attention, MLP): the graph of a real pass
    assert all(p.device.type == "meta" for p in model.parameters())  # the trace allocated none
    init(model, example={"input_ids": IDS}, seed=0, device="cpu")
    assert not [n for n, t in [*model.named_parameters(), *model.named_buffers()]
                if t.device.type == "meta"]  # fmt: skip
    real = _build(cls, config, **kw)
    for name, b in real.named_buffers():
        assert torch.equal(dict(model.named_buffers())[name], b), name
    assert abs(_loss(model) - math.log(V)) < 0.15


def test_tied_table_reaching_the_head_through_cat_is_the_head():
    """MobileBERT's logits are ``h @ cat([E.t(), dense.weight])``: the tied table ``E`` and the
    extra rows are the head, though no ``F.linear`` names them (was: table at N(0, 1), initial
    loss 15.5 against log(256) = 5.55)."""
    kw = dict(embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32,
              num_feedforward_networks=1)  # fmt: skip
    own = _loss(_build("MobileBertForMaskedLM", "MobileBertConfig", **kw))
    model = _build("MobileBertForMaskedLM", "MobileBertConfig", **kw)
    plan = init(model, example={"input_ids": IDS}, seed=0)
    assert "head" in plan["cls.predictions.dense.weight"].roles
    assert plan["mobilebert.embeddings.word_embeddings.weight"].std < 0.2 / math.sqrt(32)
    ours = _loss(model)
    assert abs(ours - math.log(V)) < 0.05 and ours <= own + 0.02


def test_relative_bias_added_to_every_layer_is_no_branch():
    """MPNet computes one relative position bias and adds it to each layer's scores: once the
    first layer mixed it into the stream, the second layer's ``scores + bias`` looked like a
    skip (was: 6 branches, two of them from layer 0's output to layer 1's query and key)."""
    model = _build("MPNetForMaskedLM", "MPNetConfig")
    ends = sorted(b.last for b in trace(model, {"input_ids": IDS}).branches)
    assert ends == [f"mpnet.encoder.layer.{i}.{s}" for i in (0, 1)
                    for s in ("attention.attn.o", "output.dense")]  # fmt: skip


def test_sigmoid_gate_on_a_parallel_branch_is_no_branch_end():
    """Qwen2-MoE adds ``experts(x) + sigmoid(gate(x)) * shared_expert(x)``: two parallel branches
    per MLP; the gate scales one of them and ends none (was: a third branch, ``shared_expert_gate``
    marked ``residual_out``)."""
    model = _build("Qwen2MoeForCausalLM", "Qwen2MoeConfig", num_experts=4, num_experts_per_tok=2,
                   moe_intermediate_size=32, shared_expert_intermediate_size=64)  # fmt: skip
    graph = trace(model, {"input_ids": IDS})
    ends = sorted(b.last.split(".", 3)[-1] for b in graph.branches)
    assert ends == sorted(["self_attn.o_proj", "mlp.experts", "mlp.shared_expert.down_proj"] * 2)
    assert "residual_out" not in graph.layers["model.layers.0.mlp.shared_expert_gate"].roles


def test_layer_shared_across_depth_ends_one_branch_per_call():
    """ALBERT runs one layer ``num_hidden_layers`` times: each call adds its two branches, so
    ``L`` counts the calls (was: 2 of 6 for 3 calls, the second call's sums taken for the
    fork's own layers)."""
    model = _build("AlbertForMaskedLM", "AlbertConfig", embedding_size=32, num_hidden_layers=3)
    graph = trace(model, {"input_ids": IDS})
    assert len(graph.branches) == 6
    assert len({b.last for b in graph.branches}) == 2


@pytest.mark.parametrize(
    "cls, config, device",
    [
        # own init: weight 1, so the norm starts at scale 2
        ("NemotronForCausalLM", "NemotronConfig", "cpu"),
        # own init: weight 0 (kept as deliberate in memory); on meta nothing is read
        ("GemmaForCausalLM", "GemmaConfig", "meta"),
    ],
)
def test_norm_scaling_by_one_plus_weight_starts_at_zero(cls, config, device):
    """Nemotron's ``LayerNorm1P`` and Gemma's RMSNorm scale by ``1 + weight``: unit scale is a
    zero weight (was: ones, every norm at scale 2)."""
    model = _build(cls, config, device, head_dim=16)
    plan = init(model, example={"input_ids": IDS}, seed=0, device="cpu")
    norms = [e for e in plan if "norm" in e.roles and e.name.endswith("weight")]
    assert len(norms) == 5 and all(e.scheme == "zeros" for e in norms)
    assert torch.equal(model.model.norm.weight, torch.zeros(64))
    assert abs(_loss(model) - math.log(V)) < 0.15


def test_mobilenet_v1_default_dropout_before_the_head_keeps_the_train_mode_loss_at_log_classes():
    # the config's default classifier dropout is 0.999: in train mode the head's input has 1000x
    # its eval-mode second moment, so the head starts at gain 0.1 sqrt(0.001)
    cfg = transformers.MobileNetV1Config(image_size=32, depth_multiplier=0.25, num_labels=10)
    assert cfg.classifier_dropout_prob > 0.9
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.MobileNetV1ForImageClassification(cfg)
    g = torch.Generator().manual_seed(0)
    plan = init(model, example=torch.randn(2, 3, 32, 32, generator=g), seed=0)
    assert "dropout" in plan["classifier.weight"].note
    x, y = torch.randn(256, 3, 32, 32, generator=g), torch.randint(10, (256,), generator=g)
    torch.manual_seed(0)
    with torch.no_grad():
        loss = float(F.cross_entropy(model.train()(pixel_values=x).logits, y))
    # 256 samples: the loss's standard error is about 0.01 nats at the uniform guess
    assert abs(loss - math.log(10)) < 0.05
