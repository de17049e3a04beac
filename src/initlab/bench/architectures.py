"""Real architectures, small, for ``initlab bench --suite models``: the default policy against
each model's own init.

Every entry builds a model with the init its authors ship (transformers models from their configs,
nothing downloaded; a torchvision-style ResNet-50 and a timm-style ViT written here) and says how
to feed it: a language model reads ``(B, T)`` token ids and is scored on the next token, a vision
model reads ``(B, 3, 32, 32)`` images. Sizes are small (2 layers, width 64) so that the suite runs
in minutes on a CPU; the structure (norm placement, tied heads, summed embeddings, zero-initialized
classifiers and layer scales) is the real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "INITS",
    "Architecture",
    "ResNet50",
    "Task",
    "TimmViT",
    "char_blocks",
    "digit_images",
    "logits_and_targets",
    "run_one",
]

D, LAYERS, HEADS, FF = 64, 2, 4, 128


@dataclass(frozen=True)
class Architecture:
    """One model of the suite.

    Attributes:
        name: short name (table row).
        kind: ``"lm"`` (causal LM), ``"seq2seq"`` (encoder-decoder LM: the encoder reads the
            previous block, the decoder predicts the next) or ``"vision"``.
        build: ``build(classes) -> nn.Module``, with the model's own init (reads the global RNG).
        needs_hf: whether it needs transformers.
    """

    name: str
    kind: str
    build: Callable[[int], nn.Module]
    needs_hf: bool = True


# --------------------------------------------------------------------------- hand-written models


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1, 3x3 (stride, ``groups``), 1x1 to ``cout`` (default
    ``4 width``), BN after each, ReLU, shortcut; ResNeXt and Wide ResNet set ``groups`` and
    ``cout``."""

    def __init__(self, cin: int, width: int, stride: int, groups: int = 1,
                 cout: int | None = None) -> None:  # fmt: skip
        super().__init__()
        cout = width * 4 if cout is None else cout
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """torchvision's ResNet-50 layout (3, 4, 6, 3 bottlenecks) at ``base`` channels, for 32x32
    inputs (3x3 stem, no max-pool), with torchvision's init: convs Kaiming normal (fan_out, ReLU),
    BN 1/0, the classifier PyTorch's default; ``zero_init_last`` zeroes each block's last BN
    gamma (torchvision's ``zero_init_residual``, timm's default)."""

    def __init__(self, classes: int = 10, base: int = 16, zero_init_last: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, base, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        blocks, cin = [], base
        for i, n in enumerate((3, 4, 6, 3)):
            width = base * 2**i
            for j in range(n):
                blocks.append(Bottleneck(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * 4
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for b in blocks:
                nn.init.zeros_(b.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class _ViTBlock(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, layer_scale: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.ls1 = nn.Parameter(torch.full((d,), layer_scale))
        self.ls2 = nn.Parameter(torch.full((d,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.ls1 * self.proj(a)
        return x + self.ls2 * self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TimmViT(nn.Module):
    """timm's ``VisionTransformer`` layout with its ``'jax'`` init: Linear Xavier uniform, patch
    conv LeCun normal, ``pos_embed`` N(0, 0.02), ``cls_token`` 1e-6 x N(0, 1), the classifier at
    zero, and DeiT-III's layer scale (each branch multiplied by a learned 1e-5 per channel)."""

    def __init__(self, classes: int = 10, d: int = D, depth: int = LAYERS, heads: int = HEADS,
                 patch: int = 4, image: int = 32, layer_scale: float = 1e-5) -> None:  # fmt: skip
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, patch, patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 1e-6)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.blocks = nn.Sequential(
            *[_ViTBlock(d, heads, 4 * d, layer_scale) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        fan_in = 3 * patch * patch
        nn.init.trunc_normal_(self.patch_embed.weight, std=1 / math.sqrt(fan_in) / 0.8796,
                              a=-2 / math.sqrt(fan_in) / 0.8796, b=2 / math.sqrt(fan_in) / 0.8796)  # fmt: skip
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


# --------------------------------------------------------------------------- transformers models


def hf_model(cls_name: str, config_name: str, config: Mapping[str, Any], classes: int,
             vision: bool | None = None, special_id: int = 0) -> nn.Module:  # fmt: skip
    """A transformers model built from ``config``: ``classes`` labels for a vision model (by
    default, a config with ``image_size``), else a vocabulary of ``classes`` tokens with every
    special token id at ``special_id``. Its own init reads the global RNG."""
    import transformers

    cfg = getattr(transformers, config_name)(**config)
    if not (("image_size" in config) if vision is None else vision):
        cfg.vocab_size = classes
    else:
        cfg.num_labels = classes
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if getattr(cfg, attr, None) is not None:
            setattr(cfg, attr, special_id)
    return getattr(transformers, cls_name)(cfg)


def _hf(cls_name: str, config_name: str, **config: Any) -> Callable[[int], nn.Module]:
    def build(classes: int) -> nn.Module:
        return hf_model(cls_name, config_name, config, classes)

    return build


_NO_DROP = {"dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0}

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("gpt2", "lm", _hf("GPT2LMHeadModel", "GPT2Config", n_layer=LAYERS, n_embd=D,
                 n_head=HEADS, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    Architecture("bert", "lm", _hf("BertLMHeadModel", "BertConfig", num_hidden_layers=LAYERS,
                 hidden_size=D, num_attention_heads=HEADS, intermediate_size=FF, is_decoder=True,
                 max_position_embeddings=64, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0)),
    Architecture("llama", "lm", _hf("LlamaForCausalLM", "LlamaConfig", num_hidden_layers=LAYERS,
                 hidden_size=D, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                 intermediate_size=FF, max_position_embeddings=64)),
    Architecture("qwen2", "lm", _hf("Qwen2ForCausalLM", "Qwen2Config", num_hidden_layers=LAYERS,
                 hidden_size=D, num_attention_heads=HEADS, num_key_value_heads=2,
                 intermediate_size=FF, max_position_embeddings=64, tie_word_embeddings=True)),
    Architecture("mamba", "lm", _hf("MambaForCausalLM", "MambaConfig", num_hidden_layers=LAYERS,
                 hidden_size=D, state_size=8, expand=2)),
    Architecture("t5", "seq2seq", _hf("T5ForConditionalGeneration", "T5Config", num_layers=LAYERS,
                 num_decoder_layers=LAYERS, d_model=D, d_kv=D // HEADS, d_ff=FF, num_heads=HEADS,
                 dropout_rate=0.0)),
    Architecture("bart", "seq2seq", _hf("BartForConditionalGeneration", "BartConfig",
                 encoder_layers=LAYERS, decoder_layers=LAYERS, d_model=D, encoder_attention_heads=HEADS,
                 decoder_attention_heads=HEADS, encoder_ffn_dim=FF, decoder_ffn_dim=FF,
                 max_position_embeddings=64, **_NO_DROP)),
    Architecture("whisper", "seq2seq", _hf("WhisperForConditionalGeneration", "WhisperConfig",
                 encoder_layers=LAYERS, decoder_layers=LAYERS, d_model=D,
                 encoder_attention_heads=HEADS, decoder_attention_heads=HEADS, encoder_ffn_dim=FF,
                 decoder_ffn_dim=FF, max_source_positions=16, max_target_positions=64,
                 num_mel_bins=16, **_NO_DROP)),
    Architecture("vit", "vision", _hf("ViTForImageClassification", "ViTConfig", image_size=32,
                 patch_size=4, num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS,
                 intermediate_size=FF, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
    Architecture("swin", "vision", _hf("SwinForImageClassification", "SwinConfig", image_size=32,
                 patch_size=2, embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=4,
                 drop_path_rate=0.0)),
    Architecture("convnext", "vision", _hf("ConvNextForImageClassification", "ConvNextConfig",
                 image_size=32, num_channels=3, hidden_sizes=[32, 64], depths=[2, 2],
                 num_stages=2, drop_path_rate=0.0)),
    Architecture("resnet50", "vision", lambda c: ResNet50(c), needs_hf=False),
    Architecture("vit-timm", "vision", lambda c: TimmViT(c), needs_hf=False),
]}  # fmt: skip
"""The suite's architectures by name."""


def _logits(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def inputs(
    arch: Architecture, x: torch.Tensor, vocab: int
) -> dict[str, torch.Tensor] | torch.Tensor:
    """The model input for a batch: images as they are; token blocks ``(B, 2T)`` split into the
    encoder's context (first half) and the decoder's input (second half, shifted right)."""
    if arch.kind == "vision":
        return x
    if arch.kind == "lm":
        return {"input_ids": x[:, :-1]}
    t = x.shape[1] // 2
    src, tgt = x[:, :t], x[:, t:]
    dec = torch.cat([torch.zeros_like(tgt[:, :1]), tgt[:, :-1]], 1)
    if arch.name == "whisper":  # log-mel stand-in: one-hot characters, two frames each
        feats = F.one_hot(src % 16, 16).float().transpose(1, 2).repeat_interleave(2, dim=2)
        return {"input_features": feats, "decoder_input_ids": dec}
    return {"input_ids": src, "decoder_input_ids": dec}


def logits_and_targets(arch: Architecture, model: nn.Module, x: torch.Tensor,
                       y: torch.Tensor | None, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(logits (N, C), targets (N,))`` for a batch: class labels ``y`` for vision, the next
    token for language models."""
    inp = inputs(arch, x, vocab)
    out = _logits(model(**inp) if isinstance(inp, dict) else model(inp))
    if arch.kind == "vision":
        return out, y  # type: ignore[return-value]
    target = x[:, 1:] if arch.kind == "lm" else x[:, x.shape[1] // 2 :]
    return out.reshape(-1, out.shape[-1]), target.reshape(-1)


def uniform_label_loss(logits: torch.Tensor, dim: int = -1, first: int = 0) -> torch.Tensor:
    r"""The cross-entropy of ``logits`` (classes along ``dim``) expected over labels drawn
    uniformly from the classes ``[first, C)``, independently of the input (random labels, or the
    next token of a random sequence of ids clear of ``first`` special tokens):

    .. math:: \mathbb{E}_y[\mathrm{CE}] = \operatorname{mean}_i \Big(\log \sum_k e^{z_{ik}}
              - \frac{1}{C - \mathrm{first}} \sum_{k \ge \mathrm{first}} z_{ik}\Big)

    The initial loss on random inputs without the labels' sampling noise: a pooled CNN's logits
    on random images are nearly one vector ``c``, so ``N`` drawn labels add ``c_y``'s spread,
    ``sqrt(Var(c) / N)`` (0.03 nats at ``Var(c)`` 0.025 and 32 labels), to a loss whose
    expectation is ``log C + Var(c) / 2``.

    >>> round(float(uniform_label_loss(torch.zeros(4, 10))), 4) == round(math.log(10), 4)
    True
    >>> z = torch.randn(6, 5)
    >>> exact = sum(F.cross_entropy(z, torch.full((6,), k)) for k in range(2, 5)) / 3
    >>> torch.allclose(uniform_label_loss(z, first=2), exact)
    True
    """
    z = logits.float().movedim(dim, -1)
    return (torch.logsumexp(z, dim=-1) - z[..., first:].mean(dim=-1)).mean()


# --------------------------------------------------------------------------- the suite

INITS = ("initlab", "own", "kaiming_normal_")
"""The three starts the suite compares: ``initlab.init``'s default, the model as its authors
build it, and ``torch.nn.init.kaiming_normal_`` on every Linear/conv weight (biases 0, norms 1/0,
embeddings as built)."""


@dataclass(frozen=True)
class Task:
    """Training and held-out data for one kind of model: token blocks or images."""

    x_train: torch.Tensor
    y_train: torch.Tensor | None
    x_val: torch.Tensor
    y_val: torch.Tensor | None
    classes: int


def char_blocks(length: int, seed: int = 0) -> Task:
    """US first names as one character stream (``.`` between names, 27 symbols), cut into
    blocks of ``length``; the last 10% of the names are held out."""
    from . import data as bench_data

    words = bench_data.names(seed=seed)
    chars = sorted(set("".join(words)) | {"."})
    stoi = {c: i for i, c in enumerate(chars)}
    cut = int(0.9 * len(words))

    def blocks(part: list[str]) -> torch.Tensor:
        ids = torch.tensor([stoi[c] for c in ".".join(part)])
        n = len(ids) // length
        return ids[: n * length].view(n, length)

    return Task(blocks(words[:cut]), None, blocks(words[cut:]), None, len(chars))


def digit_images(seed: int = 0) -> Task:
    """scikit-learn's digits as 32x32 RGB images (each pixel repeated 4x4, gray in 3 channels)."""
    from . import data as bench_data

    ds = bench_data.digits(seed=seed, image=True)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=4).repeat(1, 3, 1, 1)

    return Task(up(ds.x_train), ds.y_train, up(ds.x_test), ds.y_test, ds.num_classes)


def start(model: nn.Module, how: str, arch: Architecture, example: torch.Tensor, seed: int,
          classes: int) -> None:  # fmt: skip
    """Initialize ``model`` by one of :data:`INITS` (``own``: leave it as built)."""
    from ..planning import init
    from .methods import Context, kaiming

    if how == "initlab":
        init(model, example=inputs(arch, example, classes), seed=seed)
    elif how == "kaiming_normal_":
        kaiming(model, Context(example, lambda: iter(()), F.cross_entropy, None, seed))  # type: ignore[arg-type]


def _loss(arch: Architecture, model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
          classes: int) -> torch.Tensor:  # fmt: skip
    logits, target = logits_and_targets(arch, model, x, y, classes)
    return F.cross_entropy(logits.float(), target)


@torch.no_grad()
def layer_stds(model: nn.Module, arch: Architecture, x: torch.Tensor, classes: int) -> list[float]:
    """The std of every Linear/conv/embedding output (transformers' ``Conv1D`` included), in call
    order, in train mode."""
    stds: list[float] = []
    kinds = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)
    hooks = [m.register_forward_hook(lambda _m, _i, y: stds.append(float(y.float().std())))
             for m in model.modules()
             if isinstance(m, kinds) or type(m).__name__ == "Conv1D"]  # fmt: skip
    try:
        inp = inputs(arch, x, classes)
        model(**inp) if isinstance(inp, dict) else model(inp)
    finally:
        for h in hooks:
            h.remove()
    return stds


def run_one(arch: Architecture, how: str, task: Task, seed: int, steps: int, lr: float = 1e-3,
            batch: int = 32) -> dict[str, Any]:  # fmt: skip
    """Build ``arch`` (its own init seeded by ``seed``), start it by ``how``, measure the initial
    loss on random inputs in train mode (expected over uniform labels, :func:`uniform_label_loss`), then train ``steps`` Adam steps and measure
    the held-out loss. Returns the figures (``nan`` when training diverged). The global RNG
    (the model's dropout masks) is seeded by ``seed`` and restored after, so a row's figures do
    not depend on the runs before it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _run_one(arch, how, task, seed, steps, lr, batch)


def _run_one(arch: Architecture, how: str, task: Task, seed: int, steps: int, lr: float,
             batch: int) -> dict[str, Any]:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    model = arch.build(task.classes)
    model.train()
    example = task.x_train[:batch]
    start(model, how, arch, example, seed, task.classes)
    if arch.kind == "vision":
        xr = torch.randn((batch, *task.x_train.shape[1:]), generator=g)
        yr = torch.randint(0, task.classes, (batch,), generator=g)  # drawn to keep g's stream
    else:
        xr, yr = torch.randint(0, task.classes, (batch, task.x_train.shape[1]), generator=g), None
    with torch.no_grad():
        random_loss = float(uniform_label_loss(logits_and_targets(arch, model, xr, yr,
                                                                  task.classes)[0]))  # fmt: skip
        data_loss = float(_loss(arch, model, example, task.y_train[:batch] if task.y_train is not None else None, task.classes))  # fmt: skip
    stds = layer_stds(model, arch, example, task.classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(task.x_train), (batch,), generator=g)
        yb = task.y_train[idx] if task.y_train is not None else None
        loss = _loss(arch, model, task.x_train[idx], yb, task.classes)
        if not torch.isfinite(loss):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        n = min(512, len(task.x_val))
        yv = task.y_val[:n] if task.y_val is not None else None
        val = float(_loss(arch, model, task.x_val[:n], yv, task.classes))
    return {"random_loss": random_loss, "data_loss": data_loss, "val_loss": val,
            "losses": losses, "act_std": stds, "log_classes": math.log(task.classes)}  # fmt: skip
