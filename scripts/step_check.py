"""Whole engine steps of a real model against the cost table's sum of kernel prices.

    python scripts/step_check.py --device cuda [--table h200] [--model llama-2-7b] [--out rows.json]
    python scripts/step_check.py --device cuda --compile [--out rows.json]
    python scripts/step_check.py --device cpu --model tiny-llama-4l --table cpu --quick

The simulators price an engine step as the sum of its kernels' measured times
(`schedgym.envs.hardware.models.step_calls` and `price`). This script checks that composition
against the real thing: the model's own definition (transformers' ``LlamaForCausalLM``, random
weights, the dtype of the table) runs whole steps on the device, timed with CUDA events, and
each is set beside ``price(table, step_calls(model, batch))``. Prefill steps run one whole
prompt without a cache; decode steps run ``batch`` sequences one token each over a static KV
cache of ``context`` tokens, first as torch launches them (eager, the host queueing every
kernel), then replayed as one CUDA graph (how vLLM runs decode steps), where the host no longer
paces the GPU. Only the last position's logits are computed, as a serving engine does. On a
GPU, torch's profiler also splits one call's kernel time into GEMMs, attention and the rest,
each set beside the table's price of the same group, with the count of kernel launches.
``--compile`` runs the model through ``torch.compile``, which fuses the element-wise kernels
as a serving engine's are fused (docs/cost-model.md, "Whole steps of the real model").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from schedgym.envs.hardware import Batch, load_cost_table, step_calls
from schedgym.envs.hardware.models import get_model
from schedgym.errors import SchedgymError
from schedgym.report import format_table


def llama(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    """transformers' Llama with the shape of schedgym's model ``name``, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    m = get_model(name)
    cfg = LlamaConfig(
        hidden_size=m.hidden,
        intermediate_size=m.intermediate,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        vocab_size=m.vocab,
        max_position_embeddings=8192,
        attn_implementation="sdpa",
    )
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    return model.eval()


def gpu_time(fn: Any, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` timed calls after three warm-ups: CUDA events
    on a GPU (the GPU's time, idle gaps while the host queues included), the wall clock else."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def timed(fn: Any, device: torch.device, reps: int) -> dict[str, Any]:
    """``eager_s`` of ``fn``, and on a GPU its kernel time by group and its launch count."""
    row: dict[str, Any] = {"eager_s": gpu_time(fn, device, reps)}
    if device.type == "cuda":
        row["kernels_s"], row["launches"] = measured_groups(fn)
    return row


@torch.inference_mode()
def prefill_row(model: Any, tokens: int, device: torch.device, reps: int) -> dict[str, Any]:
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device=device)
    return timed(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), device, reps)


@torch.inference_mode()
def decode_row(
    model: Any, batch: int, context: int, device: torch.device, reps: int
) -> dict[str, Any]:
    """`timed` of one decode step, and its CUDA graph's seconds ``graph_s`` (None off a GPU,
    or with the reason it could not be captured in ``note``)."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=context + 1)
    vocab = model.config.vocab_size
    # fill the cache with `context` tokens of each sequence (chunks keep the activations small)
    for start in range(0, context, 512):
        n = min(512, context - start)
        ids = torch.randint(0, vocab, (batch, n), device=device)
        pos = torch.arange(start, start + n, device=device)
        model(input_ids=ids, past_key_values=cache, cache_position=pos, logits_to_keep=1)
    ids = torch.randint(0, vocab, (batch, 1), device=device)
    pos = torch.tensor([context], device=device)

    # transformers 5 counts the cached tokens on the GPU and appends after them: set the count
    # back before every step, so each writes the same slot and the context stays `context`
    counts = [getattr(layer, "cumulative_length", None) for layer in cache.layers]
    counts = [c for c in counts if isinstance(c, torch.Tensor)]

    def step() -> Any:
        for c in counts:
            c.fill_(context)
        return model(input_ids=ids, past_key_values=cache, cache_position=pos, logits_to_keep=1)

    row = timed(step, device, reps)
    if device.type != "cuda":
        return {**row, "graph_s": None, "note": "no GPU"}
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return {**row, "graph_s": gpu_time(graph.replay, device, reps), "note": ""}
    except Exception as e:  # noqa: BLE001 - reported in the row, the eager figure stands
        return {**row, "graph_s": None, "note": f"{type(e).__name__}: {str(e)[:120]}"}


GROUPS = {"linear": "linear", "attention_prefill": "attention", "attention_decode": "attention"}


def priced_groups(table: Any, spec: Any, batch: Batch) -> dict[str, float]:
    """The table's price of a step split into GEMMs, attention and the rest (seconds)."""
    out = {"linear": 0.0, "attention": 0.0, "other": 0.0}
    for c in step_calls(spec, batch):
        out[GROUPS.get(c.kernel, "other")] += table.predict(c.kernel, **c.params) * c.count
    return out


def kernel_group(name: str) -> str:
    """GEMM, attention or other, from a CUDA kernel's name (cuBLAS's Hopper kernels are
    ``nvjet_*`` and ``sm90_xmma_*``; SDPA's are FlashAttention's and cuDNN's)."""
    n = name.lower()
    if any(k in n for k in ("gemm", "xmma", "cutlass", "nvjet", "cublas")):
        return "linear"
    if any(k in n for k in ("flash", "fmha", "attention", "cudnn", "sdpa")):
        return "attention"
    return "other"


def measured_groups(fn: Any) -> tuple[dict[str, float], int]:
    """GPU seconds of one call of ``fn`` by kernel group, and its kernel launches (torch's
    profiler; the time inside kernels, without the gaps between them)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    out, launches = {"linear": 0.0, "attention": 0.0, "other": 0.0}, 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            out[kernel_group(e.name)] += (e.time_range.end - e.time_range.start) / 1e6  # us
            launches += 1
    return out, launches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--model", default="llama-2-7b", help="a schedgym model name (Llama-shaped)")
    ap.add_argument("--table", default="h200", help="the cost table to compare (default h200)")
    ap.add_argument("--quick", action="store_true", help="two shapes of each kind (a smoke test)")
    ap.add_argument("--reps", type=int, default=10, help="timed calls per shape (default 10)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (Inductor fuses the element-wise kernels, as "
        "a serving engine's kernels are fused), on five shapes; each shape compiles once",
    )
    ap.add_argument("--out", help="write the rows as JSON")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no GPU here")
    device = torch.device(args.device)
    try:
        table, spec = load_cost_table(args.table), get_model(args.model)
    except SchedgymError as e:
        ap.error(str(e))
    if spec.experts or not spec.gated_mlp:
        ap.error(f"--model {args.model}: not Llama-shaped (dense, gated MLP); try llama-2-7b")
    model = llama(args.model, device, torch.float16 if device.type == "cuda" else torch.float32)
    if args.compile:
        # every shape, the cache fills' included, is a compile of its own
        torch._dynamo.config.recompile_limit = 64
        model.forward = torch.compile(model.forward, dynamic=False)
    prompts = [128, 512] if args.quick else [128, 512, 1024, 2048, 4096]
    decodes = (
        [(1, 512), (8, 512)]
        if args.quick
        else [(b, c) for b in (1, 8, 32, 64) for c in (512, 2048)]
    )
    if args.compile and not args.quick:
        prompts, decodes = [512, 2048, 4096], [(8, 2048), (64, 2048)]
    rows: list[dict[str, Any]] = []
    steps = [(f"prefill {t}", Batch(((t, t),), ())) for t in prompts]
    steps += [(f"decode {b} x {c}", Batch((), (c + 1,) * b)) for b, c in decodes]
    for name, batch in steps:
        priced = priced_groups(table, spec, batch)
        if batch.prefill:
            measured = prefill_row(model, batch.prefill[0][0], device, args.reps)
        else:
            n, c = len(batch.decode_contexts), batch.decode_contexts[0] - 1
            measured = decode_row(model, n, c, device, args.reps)
        rows.append(
            {
                "step": name,
                "priced_s": sum(priced.values()),
                "priced_by_group_s": priced,
                **measured,
            }
        )
        print(rows[-1], file=sys.stderr, flush=True)

    def ratio(r: dict[str, Any], group: str) -> float | str:
        k = r.get("kernels_s")
        return "-" if k is None else k[group] / r["priced_by_group_s"][group]

    head = [
        "step",
        "priced (ms)",
        "eager (ms)",
        "eager / priced",
        "graph (ms)",
        "graph / priced",
        "GEMMs measured / priced",
        "attention measured / priced",
        "other kernels (ms)",
        "launches",
    ]
    table_rows = [
        [
            r["step"],
            1e3 * r["priced_s"],
            1e3 * r["eager_s"],
            r["eager_s"] / r["priced_s"],
            "-" if r.get("graph_s") is None else 1e3 * r["graph_s"],
            "-" if r.get("graph_s") is None else r["graph_s"] / r["priced_s"],
            ratio(r, "linear"),
            ratio(r, "attention"),
            "-" if "kernels_s" not in r else 1e3 * r["kernels_s"]["other"],
            r.get("launches", "-"),
        ]
        for r in rows
    ]
    print(format_table(head, table_rows, markdown=True))
    if args.out:
        import transformers

        meta = {
            "model": args.model,
            "table": args.table,
            "device": str(device),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "reps": args.reps,
            "compiled": args.compile,
        }
        with open(args.out, "w") as f:
            json.dump({**meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
