"""Train a small mixture-of-experts transformer on CPU and record its routing on held-out text.

The text is what every Python install has offline, in two domains: the standard library's
top-level ``.py`` sources (``code``) and the documentation topics bundled with pydoc
(``pydoc_data.topics``, ``docs``). Every tenth file / topic (sorted by name) is held out. The
model reads bytes (vocabulary 256) and has Mixtral's MoE block in miniature: 8 experts of gated
SiLU MLPs, top-2 routing with renormalised softmax weights, and the Switch-Transformer
load-balancing loss. After training, the router's top-2 choices (best first) on held-out text of
each domain become ``workloads/data/tinymoe/<domain>.npz``; routing on training text of the same
domain is stored beside it as the calibration set (what offline profiling would see).

    .venv/bin/python scripts/train_tiny_moe.py              # about 3 minutes on one CPU core
    .venv/bin/python scripts/train_tiny_moe.py --out /tmp/tinymoe --steps 50   # a quick try

The run is deterministic for a given seed, torch version and Python standard library.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from schedgym.workloads.moe import (
    RoutingTrace,
    layer_predictability,
    repetition_rates,
    save_npz,
    skew_stats,
)

OUT = Path(__file__).resolve().parents[1] / "workloads" / "data" / "tinymoe"


def domain_texts() -> dict[str, tuple[list[bytes], list[bytes]]]:
    """(train, held-out) documents of each domain; every tenth by sorted name is held out."""
    import pydoc_data.topics

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [p.read_bytes() for p in sorted(stdlib.glob("*.py"))]
    topics = pydoc_data.topics.topics
    docs = [topics[k].encode("utf-8") for k in sorted(topics)]
    out = {}
    for name, documents in (("code", sources), ("docs", docs)):
        train = [d for i, d in enumerate(documents) if i % 10 != 0]
        held = [d for i, d in enumerate(documents) if i % 10 == 0]
        out[name] = (train, held)
    return out


class MoEBlock(nn.Module):
    """Top-k routed experts (gated SiLU MLPs), Mixtral style; returns output, routing, aux loss."""

    def __init__(self, d: int, hidden: int, experts: int, k: int):
        super().__init__()
        self.k, self.experts = k, experts
        self.router = nn.Linear(d, experts, bias=False)
        self.w1 = nn.Parameter(torch.randn(experts, d, hidden) / math.sqrt(d))
        self.w3 = nn.Parameter(torch.randn(experts, d, hidden) / math.sqrt(d))
        self.w2 = nn.Parameter(torch.randn(experts, hidden, d) / math.sqrt(hidden))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1, x.shape[-1])
        probs = F.softmax(self.router(flat), dim=-1)
        weights, chosen = probs.topk(self.k, dim=-1)  # best first
        weights = weights / weights.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(flat)
        for e in range(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            h = flat[rows]
            y = (F.silu(h @ self.w1[e]) * (h @ self.w3[e])) @ self.w2[e]
            out.index_add_(0, rows, y * weights[rows, slot, None])
        # Switch Transformer load balancing: E * sum_i (share of tokens routed to i) * (mean p_i)
        share = F.one_hot(chosen[:, 0], self.experts).float().mean(0)
        aux = self.experts * (share * probs.mean(0)).sum()
        return out.reshape(x.shape), chosen.reshape(*x.shape[:-1], self.k), aux


class Block(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int, experts: int, k: int):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True, bias=False)
        self.moe = MoEBlock(d, hidden, experts, k)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        h = self.n1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        y, chosen, aux = self.moe(self.n2(x))
        return x + y, chosen, aux


class TinyMoE(nn.Module):
    def __init__(
        self, layers: int, d: int, heads: int, hidden: int, experts: int, k: int, context: int
    ):
        super().__init__()
        self.embed = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.randn(context, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, hidden, experts, k) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        self.register_buffer(
            "mask", torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        )

    def forward(self, tokens: torch.Tensor):
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:T]
        routing, aux = [], 0.0
        for block in self.blocks:
            x, chosen, a = block(x, self.mask[:T, :T])
            routing.append(chosen)
            aux = aux + a
        return self.head(self.norm(x)), torch.stack(routing, dim=2), aux / len(self.blocks)


def sample_batch(stream: np.ndarray, rng: np.random.Generator, batch: int, context: int):
    starts = rng.integers(0, stream.size - context - 1, size=batch)
    idx = starts[:, None] + np.arange(context + 1)[None, :]
    chunk = torch.from_numpy(stream[idx].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def windows(stream: np.ndarray, n: int, context: int) -> torch.Tensor:
    """``n`` non-overlapping windows spread evenly over the stream (deterministic)."""
    starts = np.linspace(0, stream.size - context, n).astype(np.int64)
    return torch.from_numpy(np.stack([stream[s : s + context] for s in starts]).astype(np.int64))


@torch.no_grad()
def record(model: TinyMoE, seqs: torch.Tensor) -> tuple[np.ndarray, float]:
    """Routing ``[tokens, layers, k]`` of the sequences back to back, and bits per byte."""
    logits, routing, _ = model(seqs)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 256), seqs[:, 1:].reshape(-1))
    return routing.reshape(-1, *routing.shape[2:]).numpy(), float(loss) / math.log(2)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--held-out-seqs", type=int, default=32)
    ap.add_argument("--calibration-seqs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    texts = domain_texts()
    streams = {
        name: tuple(np.frombuffer(b"\n".join(part), np.uint8) for part in parts)
        for name, parts in texts.items()
    }
    model = TinyMoE(
        args.layers, args.d_model, 4, 2 * args.d_model, args.experts, args.top_k, args.context
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / args.steps))
    )
    names = sorted(streams)
    start = time.time()
    for step in range(args.steps):
        # half of each batch from each domain, so the router sees both
        xs, ys = zip(
            *(sample_batch(streams[n][0], rng, args.batch // 2, args.context) for n in names),
            strict=True,
        )
        logits, _, aux = model(torch.cat(xs))
        loss = F.cross_entropy(logits.reshape(-1, 256), torch.cat(ys).reshape(-1))
        opt.zero_grad()
        (loss + 0.01 * aux).backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(
                f"step {step:4d}  loss {loss.item() / math.log(2):.3f} bits/byte  "
                f"aux {float(aux.detach()):.3f}  {time.time() - start:.0f}s",
                flush=True,
            )

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = (
        f"{args.layers} layers, d_model {args.d_model}, {args.experts} experts top-"
        f"{args.top_k}, {args.steps} steps of {args.batch}x{args.context} bytes, seed "
        f"{args.seed}; Python {platform.python_version()}, torch {torch.__version__}"
    )
    for name in names:
        held, bpb = record(model, windows(streams[name][1], args.held_out_seqs, args.context))
        calib, _ = record(model, windows(streams[name][0], args.calibration_seqs, args.context))
        trace = RoutingTrace(
            held,
            args.experts,
            np.arange(0, held.shape[0], args.context),
            name=f"tinymoe-{name}",
            source=(
                f"scripts/train_tiny_moe.py: routing on held-out {name} text "
                f"({bpb:.2f} bits/byte); {settings}"
            ),
            calibration=calib,
        )
        save_npz(trace, args.out / f"{name}.npz")
        first, either = repetition_rates(trace)
        hottest, top = skew_stats(trace, top=2)
        print(
            f"{name}: held-out {bpb:.3f} bits/byte; first-choice repeat "
            f"{np.round(first, 3).tolist()}, first-or-second {np.round(either, 3).tolist()}, "
            f"hottest/uniform {np.round(hottest, 2).tolist()}, "
            f"layer predictability {np.round(layer_predictability(trace), 2).tolist()}"
        )
    print(f"wrote {args.out} in {time.time() - start:.0f}s ({sys.executable})")


if __name__ == "__main__":
    main()
