"""Model configs and the kernel calls of one forward step, so every environment prices work alike.

``step_calls(model, batch, tp)`` lists the kernels one engine step of a decoder-only transformer
launches for a batch of prefill chunks and decode sequences (vLLM's and vidur's decomposition:
norms, QKV projection, attention, output projection, MLP, residual adds, tensor-parallel
all-reduces, and the LM head over the sequences that sample a token). ``StepCost`` caches the
parts that depend only on the total token count, so pricing a step costs a table lookup plus the
two attention calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from schedgym.envs.hardware.costs import KernelCostTable
from schedgym.errors import SchedgymError


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer, dense or mixture-of-experts (HF ``config.json`` names)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int  # dense MLP width (per expert for MoE: moe_intermediate_size)
    vocab: int
    gated_mlp: bool = True
    dtype_bytes: int = 2
    experts: int = 0  # routed experts per MoE layer (0: dense)
    top_k: int = 0
    shared_experts: int = 0
    shared_intermediate: int = 0  # width of the shared expert(s) MLP, if any
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model {self.name!r}: {f} must be positive")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"model {self.name!r}: heads must divide hidden, kv_heads heads")
        if self.experts and not 0 < self.top_k <= self.experts:
            raise ValueError(f"model {self.name!r}: top_k must be in 1..experts")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    def expert_bytes(self, bits: int | None = None) -> int:
        """Bytes of one routed expert's weights, at ``bits`` per weight (default: dtype)."""
        n = self.mlp_matrices * self.hidden * self.intermediate
        return n * self.dtype_bytes if bits is None else n * bits // 8

    def weight_bytes(self, tp: int = 1) -> int:
        """Weights held by one of ``tp`` tensor-parallel GPUs (embeddings and head included)."""
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
        attn += self.heads * self.head_dim * self.hidden
        if self.experts:
            mlp = self.experts * self.expert_bytes() // self.dtype_bytes
            mlp += self.mlp_matrices * self.hidden * self.shared_intermediate
        else:
            mlp = self.mlp_matrices * self.hidden * self.intermediate
        per_layer = attn + mlp + 2 * self.hidden
        total = self.layers * per_layer + 2 * self.vocab * self.hidden
        return total * self.dtype_bytes // tp

    def kv_bytes_per_token(self, tp: int = 1) -> int:
        """KV-cache bytes one token occupies on one of ``tp`` GPUs."""
        return 2 * self.layers * (self.kv_heads // tp or 1) * self.head_dim * self.dtype_bytes


# Figures from each model's Hugging Face config.json (named in ``source``).
MODELS: dict[str, ModelConfig] = {
    m.name: m
    for m in (
        ModelConfig(
            "llama-2-7b",
            32,
            4096,
            32,
            32,
            11008,
            32000,
            source="meta-llama/Llama-2-7b-hf config.json",
        ),
        ModelConfig(
            "llama-2-70b",
            80,
            8192,
            64,
            8,
            28672,
            32000,
            source="meta-llama/Llama-2-70b-hf config.json",
        ),
        ModelConfig(
            "phi-2",
            32,
            2560,
            32,
            32,
            10240,
            51200,
            gated_mlp=False,
            source="microsoft/phi-2 config.json",
        ),
        # Small enough to serve on a CPU; the shape of TinyLlama-1.1B at a quarter of the depth.
        ModelConfig(
            "tiny-llama-4l",
            4,
            2048,
            32,
            4,
            5632,
            32000,
            source="TinyLlama/TinyLlama-1.1B config.json, 4 of its 22 layers",
        ),
        ModelConfig(
            "mixtral-8x7b",
            32,
            4096,
            32,
            8,
            14336,
            32000,
            experts=8,
            top_k=2,
            source="mistralai/Mixtral-8x7B-v0.1 config.json",
        ),
        ModelConfig(
            "olmoe-1b-7b",
            16,
            2048,
            16,
            16,
            1024,
            50304,
            experts=64,
            top_k=8,
            source="allenai/OLMoE-1B-7B-0924 config.json",
        ),
        ModelConfig(
            "qwen1.5-moe-a2.7b",
            24,
            2048,
            16,
            16,
            1408,
            151936,
            experts=60,
            top_k=4,
            shared_experts=1,
            shared_intermediate=5632,
            source="Qwen/Qwen1.5-MoE-A2.7B config.json",
        ),
        ModelConfig(
            "deepseek-v2-lite",
            27,
            2048,
            16,
            16,
            1408,
            102400,
            experts=64,
            top_k=6,
            shared_experts=2,
            shared_intermediate=2 * 1408,
            source="deepseek-ai/DeepSeek-V2-Lite config.json (MLA priced as MHA)",
        ),
    )
}


def get_model(name: str) -> ModelConfig:
    try:
        return MODELS[name]
    except KeyError:
        raise SchedgymError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


@dataclass(frozen=True)
class Batch:
    """One engine step's work: prefill chunks ``(tokens, context_after_chunk)`` and the KV
    lengths of the sequences that decode one token each."""

    prefill: Sequence[tuple[int, int]] = ()
    decode_contexts: Sequence[int] = ()

    @property
    def tokens(self) -> int:
        return sum(t for t, _ in self.prefill) + len(self.decode_contexts)


@dataclass(frozen=True)
class KernelCall:
    kernel: str
    params: dict[str, float]
    count: int = 1  # launches per step (layers x per-layer repeats)


def dense_calls(model: ModelConfig, tokens: int, tp: int = 1) -> list[KernelCall]:
    """Kernels of one step that depend only on the batch's total token count (not attention)."""
    L, h, hd = model.layers, model.hidden, model.head_dim
    q_heads, kv_heads = model.heads // tp, max(model.kv_heads // tp, 1)
    calls = [
        KernelCall("layernorm", {"elements": tokens * h}, 2 * L),
        KernelCall(
            "linear", {"tokens": tokens, "d_in": h, "d_out": (q_heads + 2 * kv_heads) * hd}, L
        ),
        KernelCall("linear", {"tokens": tokens, "d_in": q_heads * hd, "d_out": h}, L),
        KernelCall("elementwise", {"elements": tokens * h}, 2 * L),
    ]
    if model.experts:
        return calls  # expert MLPs are priced by the MoE environment per routed token
    width = model.intermediate // tp
    calls += [
        KernelCall(
            "linear",
            {"tokens": tokens, "d_in": h, "d_out": width * (2 if model.gated_mlp else 1)},
            L,
        ),
        KernelCall("activation", {"elements": tokens * width}, L),
        KernelCall("linear", {"tokens": tokens, "d_in": width, "d_out": h}, L),
    ]
    if tp > 1:
        calls.append(
            KernelCall(
                "all_reduce", {"bytes": tokens * h * model.dtype_bytes, "workers": tp}, 2 * L
            )
        )
    return calls


def attention_calls(model: ModelConfig, batch: Batch, tp: int = 1) -> list[KernelCall]:
    """Attention for each prefill chunk over its context, and one decode call for the batch
    at its mean KV length (vidur's decode model)."""
    shape = {
        "heads": model.heads // tp,
        "kv_heads": max(model.kv_heads // tp, 1),
        "head_dim": model.head_dim,
    }
    calls = [
        KernelCall("attention_prefill", {"tokens": t, "context": c, **shape}, model.layers)
        for t, c in batch.prefill
    ]
    if batch.decode_contexts:
        mean_ctx = float(np.mean(batch.decode_contexts))
        calls.append(
            KernelCall(
                "attention_decode",
                {"batch": len(batch.decode_contexts), "context": mean_ctx, **shape},
                model.layers,
            )
        )
    return calls


def step_calls(model: ModelConfig, batch: Batch, tp: int = 1) -> list[KernelCall]:
    """Every kernel one engine step launches; the LM head runs for each sequence in the batch."""
    n_seqs = len(batch.prefill) + len(batch.decode_contexts)
    head = (
        [KernelCall("linear", {"tokens": n_seqs, "d_in": model.hidden, "d_out": model.vocab // tp})]
        if n_seqs
        else []
    )
    return dense_calls(model, batch.tokens, tp) + attention_calls(model, batch, tp) + head


def price(table: KernelCostTable, calls: Sequence[KernelCall]) -> float:
    """Seconds for a list of kernel calls launched back to back."""
    return float(sum(table.predict(c.kernel, **c.params) * c.count for c in calls))


@dataclass
class StepCost:
    """Prices engine steps of ``model`` on ``table`` fast: token-only parts are precomputed for
    every token count up to ``max_tokens``; attention is priced per step (vectorised)."""

    table: KernelCostTable
    model: ModelConfig
    tp: int = 1
    max_tokens: int = 8192
    max_seqs: int = 1024
    _dense: np.ndarray = field(init=False, repr=False)
    _head: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tokens = np.arange(1, self.max_tokens + 1, dtype=float)
        self._dense = np.zeros(self.max_tokens + 1)
        for call in dense_calls(self.model, 1, self.tp):
            params = _scale_token_params(call.params, tokens)
            self._dense[1:] += self.table.predict_many(call.kernel, **params) * call.count
        seqs = np.arange(1, self.max_seqs + 1, dtype=float)
        self._head = np.zeros(self.max_seqs + 1)
        self._head[1:] = self.table.predict_many(
            "linear", tokens=seqs, d_in=self.model.hidden, d_out=self.model.vocab // self.tp
        )

    def __call__(self, batch: Batch) -> float:
        n_tokens = batch.tokens
        n_seqs = len(batch.prefill) + len(batch.decode_contexts)
        if n_tokens > self.max_tokens or n_seqs > self.max_seqs:
            raise ValueError(
                f"batch of {n_tokens} tokens / {n_seqs} sequences exceeds StepCost limits "
                f"({self.max_tokens} / {self.max_seqs})"
            )
        t = self._dense[n_tokens] + self._head[n_seqs]
        L = self.model.layers
        shape = {
            "heads": self.model.heads // self.tp,
            "kv_heads": max(self.model.kv_heads // self.tp, 1),
            "head_dim": self.model.head_dim,
        }
        if len(batch.prefill):
            chunk = np.array(batch.prefill, dtype=float)
            t += L * float(
                np.sum(
                    self.table.predict_many(
                        "attention_prefill", tokens=chunk[:, 0], context=chunk[:, 1], **shape
                    )
                )
            )
        if len(batch.decode_contexts):
            t += L * self.table.predict(
                "attention_decode",
                batch=len(batch.decode_contexts),
                context=float(np.mean(batch.decode_contexts)),
                **shape,
            )
        return float(t)


def _scale_token_params(params: dict[str, float], tokens: np.ndarray) -> dict[str, object]:
    """``dense_calls(model, 1)`` gives per-token sizes; scale the token-proportional axes."""
    out: dict[str, object] = {}
    for k, v in params.items():
        out[k] = tokens * v if k in ("tokens", "elements", "bytes") else v
    return out
