"""Real model definitions, written in torch, whose traced operator graphs become workloads.

The DAG environment schedules their operators on devices; the memory-mapping environment places
their activations in memory tiers. Each zoo entry builds the module and an example input, so a
trace is reproducible from the name alone (``workloads.tracing.trace_model("gpt2-tiny")``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        shape = (b, t, self.n_heads, c // self.n_heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class DecoderBlock(nn.Module):
    """A GPT-2 block: pre-norm attention and a 4x GELU MLP, each with a residual add."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPTDecoder(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, seq_len: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        self.blocks = nn.ModuleList(DecoderBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm and a residual path."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNet(nn.Module):
    """ResNet-18's layout (He et al. 2016) with configurable width and blocks per stage."""

    def __init__(
        self, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2), classes: int = 1000
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, c = [], width
        for stage, n in enumerate(blocks):
            c_out = width * 2**stage
            for i in range(n):
                layers.append(BasicBlock(c, c_out, 2 if (i == 0 and stage > 0) else 1))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MLP(nn.Module):
    def __init__(self, d_in: int, hidden: int, layers: int, d_out: int):
        super().__init__()
        dims = [d_in] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:], strict=False))
        self.out = nn.Linear(dims[-1], d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


@dataclass(frozen=True)
class ZooEntry:
    build: Callable[[], nn.Module]
    example: Callable[[], tuple[torch.Tensor, ...]]
    description: str


def _tokens(batch: int, seq: int, vocab: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (
        torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)),
    )


MODEL_ZOO: dict[str, ZooEntry] = {
    "gpt2-tiny": ZooEntry(
        lambda: GPTDecoder(vocab=8192, d_model=256, n_layers=2, n_heads=4, seq_len=128),
        _tokens(4, 128, 8192),
        "GPT-2-style decoder, 2 layers, d_model 256, batch 4 x 128",
    ),
    "gpt2-small": ZooEntry(
        lambda: GPTDecoder(vocab=50257, d_model=768, n_layers=12, n_heads=12, seq_len=1024),
        _tokens(1, 1024, 50257),
        "GPT-2 small (124M): 12 layers, d_model 768, 1 x 1024 tokens",
    ),
    "gpt2-medium": ZooEntry(
        lambda: GPTDecoder(vocab=50257, d_model=1024, n_layers=24, n_heads=16, seq_len=1024),
        _tokens(1, 1024, 50257),
        "GPT-2 medium (350M): 24 layers, d_model 1024, 1 x 1024 tokens",
    ),
    "resnet18": ZooEntry(
        lambda: ResNet(64, (2, 2, 2, 2)),
        lambda: (torch.zeros(8, 3, 224, 224),),
        "ResNet-18, batch 8 at 224x224",
    ),
    "resnet-tiny": ZooEntry(
        lambda: ResNet(16, (1, 1, 1, 1), classes=10),
        lambda: (torch.zeros(2, 3, 64, 64),),
        "ResNet-style CNN, width 16, one block a stage",
    ),
    "mlp": ZooEntry(
        lambda: MLP(1024, 4096, 4, 1000),
        lambda: (torch.zeros(256, 1024),),
        "4-layer ReLU MLP 1024-4096-...-1000, batch 256",
    ),
}
