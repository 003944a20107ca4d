"""Model configs and traced operator graphs against figures published for those models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schedgym.envs.hardware import Batch, StepCost, get_model, load_cost_table, price, step_calls
from schedgym.errors import SchedgymError, WorkloadError
from schedgym.workloads.tracing import trace, trace_model

GiB, MiB = 2**30, 2**20


@pytest.mark.parametrize(
    "name, params_b",
    [("llama-2-7b", 6.74), ("llama-2-70b", 68.98), ("mixtral-8x7b", 46.70)],
)
def test_parameter_counts_match_the_published_sizes(name, params_b):
    m = get_model(name)
    assert m.weight_bytes() / m.dtype_bytes / 1e9 == pytest.approx(params_b, rel=0.003)


def test_kv_cache_and_expert_sizes_match_published_figures():
    # Llama-2-7B: 2 (K, V) x 32 layers x 4096 x 2 bytes = 0.5 MiB per token
    assert get_model("llama-2-7b").kv_bytes_per_token() == 512 * 1024
    # 70B uses grouped-query attention with 8 KV heads: 2 x 80 x 8 x 128 x 2 bytes
    assert get_model("llama-2-70b").kv_bytes_per_token() == 327_680
    assert get_model("mixtral-8x7b").expert_bytes() == 336 * MiB
    assert get_model("olmoe-1b-7b").expert_bytes() / 1e6 == pytest.approx(12.6, abs=0.05)
    assert get_model("qwen1.5-moe-a2.7b").expert_bytes() / 1e6 == pytest.approx(17.3, abs=0.05)
    assert get_model("mixtral-8x7b").expert_bytes(bits=4) == 336 * MiB // 4
    with pytest.raises(SchedgymError, match="unknown model"):
        get_model("gpt-5")


def test_cached_step_cost_equals_pricing_every_kernel_call():
    table = load_cost_table("a100")
    model = get_model("llama-2-70b")
    fast = StepCost(table, model, tp=4)
    rng = np.random.default_rng(0)
    for _ in range(20):
        prefill = [(int(t), int(t + c)) for t, c in rng.integers(1, 800, size=(2, 2))]
        batch = Batch(prefill, [int(c) for c in rng.integers(1, 4000, size=rng.integers(0, 40))])
        assert fast(batch) == pytest.approx(price(table, step_calls(model, batch, tp=4)))


def test_step_time_grows_with_work():
    step = StepCost(load_cost_table("h100"), get_model("llama-2-7b"))
    small = step(Batch(decode_contexts=[512] * 8))
    bigger_batch = step(Batch(decode_contexts=[512] * 64))
    longer_ctx = step(Batch(decode_contexts=[4096] * 8))
    with_prefill = step(Batch([(1024, 1024)], [512] * 8))
    assert small < bigger_batch and small < longer_ctx and small < with_prefill
    # a decode step of Llama-2-7B streams its 13.5 GB of weights: at least 13.5e9 / 3.35e12 s
    assert small > 13.47e9 / 3.35e12


def test_traced_resnet18_has_the_published_multiply_adds():
    """He et al. (2016), Table 1: ResNet-18 takes 1.8e9 multiply-adds per 224x224 image."""
    ops = trace_model("resnet18")
    macs = sum(
        o.params["tokens"] * o.params["d_in"] * o.params["d_out"]
        for o in ops
        if o.kernel == "linear"
    )
    assert macs / 8 / 1e9 == pytest.approx(1.8, abs=0.05)


def test_traced_gpt2_linear_work_is_two_flops_per_weight_per_token():
    model_ops = trace_model("gpt2-tiny")
    from schedgym.workloads.torch_models import MODEL_ZOO

    module = MODEL_ZOO["gpt2-tiny"].build()
    weights = sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))
    macs = sum(
        o.params["tokens"] * o.params["d_in"] * o.params["d_out"]
        for o in model_ops
        if o.kernel == "linear"
    )
    assert macs == weights * 4 * 128  # batch 4 x 128 tokens
    attn = [o for o in model_ops if o.kernel == "attention_prefill"]
    assert len(attn) == 2 and attn[0].count == 4 and attn[0].params["heads"] == 4
    # views cost nothing: attention reads the fused qkv output directly, all three thirds of it
    qkv = next(o for o in model_ops if o.name == "blocks_0_attn_qkv")
    assert attn[0].inputs == (qkv.name,) and attn[0].input_bytes == (qkv.output_bytes,)


def test_an_unknown_operator_is_refused_by_name():
    class Odd(torch.nn.Module):
        def forward(self, x):
            return torch.fft.fft(x)

    with pytest.raises(WorkloadError, match="unsupported function .*fft"):
        trace(Odd(), (torch.zeros(4),), "odd")
