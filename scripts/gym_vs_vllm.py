"""The simulator against the real vLLM engine, step by step (docs/serving.md, section 4).

The first ``--requests`` requests of the Azure LLM inference trace 2023 (conversation), their
lengths scaled so that the longest fits the tiny model's ``max_model_len``, all arriving at
once, prefix caching off; the same block size, KV blocks, ``max_num_batched_tokens`` and
``max_num_seqs`` on both sides. The simulator runs ``heuristic:vllm-v1`` (decodes first, FCFS,
one budget); vLLM (CPU build, in-process, dummy-weight 2-layer Llama) runs its own scheduler.
Both log the tokens scheduled per request at every step; the script prints the share of
identical steps and the first differences, and writes them as JSON.

    .venv/bin/python scripts/gym_vs_vllm.py --requests 200 --out gym_vs_vllm.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from schedgym.envs.batching.core import BatchingEngine, EngineConfig, QueueScheduler
from schedgym.workloads.base import shared_data_dir
from schedgym.workloads.serving import load_trace

AZURE_CONV = "traces/azure-llm-2023/AzureLLMInferenceTrace_conv.csv"
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float32",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
KV_BYTES_PER_TOKEN = 2 * 2 * 2 * 32 * 4  # layers x (K, V) x heads x head_dim x fp32


def azure_slice(n: int, max_model_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of the trace's first ``n`` requests, scaled by one factor so
    that the longest request (prompt + output) fits ``max_model_len``."""
    trace = load_trace(shared_data_dir() / AZURE_CONV).head(n)
    p, o = trace.prompt_tokens.astype(float), trace.output_tokens.astype(float)
    scale = min(1.0, max_model_len / float((p + o).max()))
    prompt = np.maximum(1, np.floor(p * scale)).astype(np.int64)
    output = np.maximum(1, np.floor(o * scale)).astype(np.int64)
    return prompt, output


def simulate(
    prompt: np.ndarray, output: np.ndarray, *, block: int, kv_blocks: int, budget: int, seqs: int
) -> tuple[list[dict[int, int]], int]:
    """Tokens per request at every step of the simulator under ``heuristic:vllm-v1``, and the
    number of preemptions."""
    from schedgym.workloads.serving import ServingTrace

    n = prompt.size
    trace = ServingTrace(np.zeros(n), prompt, output, np.zeros(n, np.int64), name="azure-slice")
    config = EngineConfig(
        model="tiny-llama-4l",
        hardware="cpu",
        max_num_seqs=seqs,
        max_num_batched_tokens=budget,
        budgets=(budget,),
        prefill_first_budget=budget,
        kv_blocks=kv_blocks,
        block_size=block,
        watermark=0.0,  # vLLM's default
        admit_full_sequence=True,  # vLLM's default scheduler_reserve_full_isl
        preempt_for_whole_chunk=True,
    )
    engine = BatchingEngine(trace, config)
    QueueScheduler(budget=budget, window=n).drive(engine)
    counts = engine.step_log.view("entries")
    rid, tokens = engine.entry_log.view("rid"), engine.entry_log.view("tokens")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    steps = [
        dict(zip(rid[a:b].tolist(), tokens[a:b].tolist(), strict=True))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return steps, int(engine.preempt_log.n)


def run_vllm(
    prompt: np.ndarray,
    output: np.ndarray,
    *,
    block: int,
    kv_blocks: int,
    budget: int,
    seqs: int,
    max_model_len: int,
    scheduler_cls: str | None = None,
    additional_config: dict[str, Any] | None = None,
) -> tuple[list[dict[int, int]], int, Any]:
    """Tokens per request at every step of vLLM's engine on the same requests, the number of
    preemptions, and the LLM."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    model = Path(tempfile.mkdtemp(prefix="tiny-llama-"))
    (model / "config.json").write_text(json.dumps(TINY_LLAMA))
    extra: dict[str, Any] = {}
    if scheduler_cls:
        extra = {"scheduler_cls": scheduler_cls, "additional_config": additional_config or {}}
    llm = LLM(
        model=str(model),
        load_format="dummy",
        skip_tokenizer_init=True,
        enforce_eager=True,
        dtype="float32",
        block_size=block,
        max_model_len=max_model_len,
        max_num_batched_tokens=budget,
        max_num_seqs=seqs,
        enable_prefix_caching=False,
        kv_cache_memory_bytes=kv_blocks * block * KV_BYTES_PER_TOKEN,
        seed=0,
        **extra,
    )
    sched = llm.llm_engine.engine_core.engine_core.scheduler
    steps: list[dict[int, int]] = []
    preempted = [0]
    schedule = type(sched).schedule

    def logged(*args: Any, **kwargs: Any) -> Any:
        out = schedule(sched, *args, **kwargs)
        preempted[0] += len(out.preempted_req_ids or ())
        if out.total_num_scheduled_tokens:
            steps.append({int(r.split("-")[0]): n for r, n in out.num_scheduled_tokens.items()})
        return out

    sched.schedule = logged
    rng = np.random.default_rng(0)
    prompts = [TokensPrompt(prompt_token_ids=rng.integers(3, 500, int(p)).tolist()) for p in prompt]
    params = [
        SamplingParams(temperature=0, ignore_eos=True, detokenize=False, max_tokens=int(o))
        for o in output
    ]
    llm.generate(prompts, params, use_tqdm=False)
    del sched.schedule
    return steps, preempted[0], llm


def compare(sim: list[dict[int, int]], real: list[dict[int, int]]) -> dict[str, Any]:
    """Share of steps (by index) whose tokens per request are identical, and the first
    differing step."""
    n = max(len(sim), len(real))
    same = [i < len(sim) and i < len(real) and sim[i] == real[i] for i in range(n)]
    first = next((i for i, s in enumerate(same) if not s), None)
    return {
        "steps_simulator": len(sim),
        "steps_vllm": len(real),
        "identical_steps": int(sum(same)),
        "identical_share": sum(same) / n if n else 1.0,
        "first_difference": None
        if first is None
        else {
            "step": first,
            "simulator": sim[first] if first < len(sim) else None,
            "vllm": real[first] if first < len(real) else None,
        },
    }


def per_request(steps: list[dict[int, int]], prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """``int[n, 3]``: each request's admission step, TTFT and TPOT in engine steps, from the
    tokens scheduled per step (steps numbered from 0, all requests arriving before step 0).
    The first token comes at the end of the step where the request's scheduled tokens first
    reach its prompt; TPOT is (last step - first-token step) / (output - 1), NaN for one token."""
    n = prompt.size
    admitted = np.full(n, -1)
    first = np.full(n, -1)
    last = np.full(n, -1)
    done = np.zeros(n, np.int64)
    for s, step in enumerate(steps):
        for r, t in step.items():
            if admitted[r] < 0:
                admitted[r] = s
            done[r] += t
            if first[r] < 0 and done[r] >= prompt[r]:
                first[r] = s
            last[r] = s
    ttft = first + 1
    tpot = np.where(output > 1, (last - first) / np.maximum(output - 1, 1), np.nan)
    return np.column_stack([admitted, ttft, tpot])


def simulate_policy(
    policy: Path,
    prompt: np.ndarray,
    output: np.ndarray,
    *,
    block: int,
    kv_blocks: int,
    budget: int,
    seqs: int,
) -> tuple[list[dict[int, int]], tuple[float, float]]:
    """Steps of Batching-v0 driven by the exported ``policy`` (onnxruntime) on the requests,
    all arriving at once, every request in the interactive SLO class, the output-length
    prediction exact (as the plugin's ``max_tokens`` hint is here), the budgets above
    ``budget`` and the prefill-first step masked out as the plugin masks them; and the
    (TTFT, TBT) targets it used."""
    from schedgym.agents.export import onnx_session
    from schedgym.envs.batching.env import BatchingEnv

    csv = Path(tempfile.mkdtemp(prefix="azure-slice-")) / "slice.csv"
    rows = [f"2023-11-16 18:15:46.0000000,{p},{o}" for p, o in zip(prompt, output, strict=True)]
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    env = BatchingEnv(
        case=f"file:{csv}",
        length_noise=0.0,
        slo_mix=(1.0, 0.0),
        model="tiny-llama-4l",
        hardware="cpu",
        max_num_seqs=seqs,
        kv_blocks=kv_blocks,
        block_size=block,
    )
    session = onnx_session(policy / "policy.onnx")
    names = [i.name for i in session.get_inputs()][:-1]
    obs, _ = env.reset(seed=0)
    E = env.layout.max_entities
    allowed = np.ones(env.layout.n_actions, bool)
    for j, b in enumerate(env.budgets):
        allowed[E + j] = b <= budget
    allowed[env.prefill_first_action] = False
    done = False
    while not done:
        mask = env.action_masks() & allowed
        feed = {k: np.asarray(obs[k])[None] for k in names}
        feed["action_mask"] = mask[None]
        action = int(session.run(["action"], feed)[0][0])
        obs, _, done, _, _ = env.step(action)
    core = env.core
    counts = core.step_log.view("entries")
    rid, tokens = core.entry_log.view("rid"), core.entry_log.view("tokens")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    steps = [
        dict(zip(rid[a:b].tolist(), tokens[a:b].tolist(), strict=True))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    targets = env.trace.slo_classes[0]
    return steps, (targets.ttft_s, targets.tbt_s)


def compare_policy(
    policy: Path, prompt: np.ndarray, output: np.ndarray, shape: dict[str, int], args: Any
) -> dict[str, Any]:
    """The exported policy in the simulator and in vLLM (PolicyScheduler) on the same
    requests: per-request admission step, TTFT and TPOT in engine steps, side by side. The KV
    cache is ``--policy-kv-blocks`` here: Batching-v0 needs room for its largest budget (8,192
    tokens) even where the plugin masks it."""
    shape = {**shape, "kv_blocks": args.policy_kv_blocks}
    sim, (ttft_s, tbt_s) = simulate_policy(policy, prompt, output, **shape)
    real, _, _ = run_vllm(
        prompt,
        output,
        max_model_len=args.max_model_len,
        scheduler_cls="schedgym.plugins.vllm.PolicyScheduler",
        additional_config={
            "schedgym": {
                "policy": str(policy),
                "ttft_s": ttft_s,
                "tbt_s": tbt_s,
                "deadline_ms": 1e9,
            }
        },
        **{**shape, "kv_blocks": shape["kv_blocks"] + 1},  # vLLM's null block
    )
    a, b = per_request(sim, prompt, output), per_request(real, prompt, output)

    def stats(x: np.ndarray) -> list[float]:
        x = x[np.isfinite(x)]
        return [float(np.mean(x)), float(np.percentile(x, 50)), float(np.percentile(x, 99))]

    return {
        "slo_targets_s": [ttft_s, tbt_s],
        "kv_blocks": shape["kv_blocks"],
        "steps": [len(sim), len(real)],
        "same_admission_step": float(np.mean(a[:, 0] == b[:, 0])),
        "mean_p50_p99": {
            name: {"simulator": stats(a[:, i]), "vllm": stats(b[:, i])}
            for i, name in enumerate(("admission_step", "ttft_steps", "tpot_steps"))
        },
        "requests": [
            {"request": r, "simulator": a[r].tolist(), "vllm": b[r].tolist()} for r in range(len(a))
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--kv-blocks", type=int, default=128)
    ap.add_argument("--budget", type=int, default=512)
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument(
        "--policy", help="also run this exported batching policy (schedgym export) on both sides"
    )
    ap.add_argument("--policy-kv-blocks", type=int, default=320)
    ap.add_argument("--out", help="write the comparison as JSON")
    args = ap.parse_args()
    prompt, output = azure_slice(args.requests, args.max_model_len)
    shape = dict(block=args.block, kv_blocks=args.kv_blocks, budget=args.budget, seqs=args.seqs)
    real, real_preempted, llm = run_vllm(prompt, output, max_model_len=args.max_model_len, **shape)
    usable = llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool
    # vLLM keeps one block aside (the null block): the simulator gets the usable ones
    sim, sim_preempted = simulate(
        prompt, output, **{**shape, "kv_blocks": usable.num_gpu_blocks - 1}
    )
    result = {
        "settings": vars(args),
        "preemptions_simulator": sim_preempted,
        "preemptions_vllm": real_preempted,
        **compare(sim, real),
    }
    if args.policy:
        result["policy"] = compare_policy(Path(args.policy), prompt, output, shape, args)
    print(json.dumps({k: v for k, v in result.items() if k != "first_difference"}, indent=1))
    print("first difference:", result["first_difference"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
