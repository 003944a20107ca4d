"""The batching policy as vLLM's scheduler, inside the real vLLM engine (in-process, a tiny
dummy-weight Llama on the CPU backend). `make vllm` installs vLLM; CI runs it before the tests.
Engine steps take milliseconds to a tenth of a second on a busy machine: the tests assert
decisions and outputs, never wall-clock time."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

try:
    import vllm
except ImportError:
    if os.environ.get("CI"):  # CI installs vLLM (`make vllm`): a missing one is a failure
        raise
    pytest.skip("vLLM is not installed (run `make vllm`)", allow_module_level=True)

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from recipes import load_script  # noqa: E402
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from schedgym.agents.export import export  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# the gym-vs-engine recipe and these tests run the same tiny dummy-weight Llama
GYM_VS_VLLM = load_script("gym_vs_vllm")
TINY_LLAMA = {**GYM_VS_VLLM.TINY_LLAMA, "max_position_embeddings": 2048}
BLOCK = 32  # the CPU backend needs a multiple of 32
# 16 KV blocks of 32 tokens (2 layers x 2 heads x 32 x fp32 x K and V = 1 KiB per token):
# 512 tokens for up to 8 running requests of up to 200 + 100 tokens, so decodes outgrow the
# cache and vLLM preempts
KV_BYTES = 16 * BLOCK * 1024
N_REQUESTS = 16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    return folder


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("batching-policy")
    export(f"ppo:{ROOT / 'policies/batching-ppo'}", out)
    return out


# Engines live until the process ends: vLLM's parallel state is process-global, and an engine
# torn down in-process takes it away from the engines still running.
_ENGINES: list[LLM] = []


def make_llm(
    model_dir: Path, policy: Path | None = None, cls: str = "PolicyScheduler", **schedgym
) -> LLM:
    extra = {}
    if policy is not None:
        extra = {
            "scheduler_cls": f"schedgym.plugins.vllm.{cls}",
            "additional_config": {"schedgym": {"policy": str(policy), **schedgym}},
        }
    llm = LLM(
        model=str(model_dir),
        load_format="dummy",
        skip_tokenizer_init=True,
        enforce_eager=True,
        dtype="float32",
        block_size=BLOCK,
        max_model_len=384,
        max_num_batched_tokens=1024,
        max_num_seqs=8,
        enable_prefix_caching=False,
        kv_cache_memory_bytes=KV_BYTES,
        seed=0,
        **extra,
    )
    _ENGINES.append(llm)
    return llm


def workload(seed: int = 0) -> tuple[list[TokensPrompt], list[SamplingParams]]:
    rng = np.random.default_rng(seed)
    prompts = [
        TokensPrompt(prompt_token_ids=rng.integers(3, 500, size=int(n)).tolist())
        for n in rng.integers(20, 200, size=N_REQUESTS)
    ]
    params = [
        SamplingParams(temperature=0, ignore_eos=True, detokenize=False, max_tokens=int(m))
        for m in rng.integers(10, 100, size=N_REQUESTS)
    ]
    return prompts, params


def step_tokens(steps: list) -> list[dict[int, int]]:
    """Tokens scheduled per request (by its index in the workload: vLLM numbers requests
    across an engine's runs) at every step."""
    return [
        {int(rid.split("-")[0]) % N_REQUESTS: n for rid, n in s.num_scheduled_tokens.items()}
        for s in steps
    ]


def scheduler_of(llm: LLM):
    return llm.llm_engine.engine_core.engine_core.scheduler


def run(llm: LLM, seed: int = 0) -> tuple[list[list[int]], list]:
    """Generate the workload; return every request's tokens and every step's SchedulerOutput."""
    sched = scheduler_of(llm)
    steps = []
    schedule = type(sched).schedule

    def logged(*args, **kwargs):
        out = schedule(sched, *args, **kwargs)
        steps.append(out)
        return out

    sched.schedule = logged
    try:
        outs = llm.generate(*workload(seed), use_tqdm=False)
    finally:
        del sched.schedule
    return [list(o.outputs[0].token_ids) for o in outs], steps


@pytest.fixture(scope="module")
def stock(model_dir):
    return run(make_llm(model_dir))


@pytest.fixture(scope="module")
def plugged(model_dir, policy_dir):
    # SLO targets far above the run's times keep the time features near 0: the decisions then
    # depend on tokens and KV blocks only, and the run is repeatable
    return make_llm(
        model_dir, policy_dir, log_decisions=True, deadline_ms=1e9, ttft_s=1e6, tbt_s=1e6
    )


def test_the_two_hooks_are_where_the_plugin_expects_them():
    import inspect

    from packaging.version import Version
    from vllm.v1.core.sched.request_queue import (
        FCFSRequestQueue,
        SchedulingPolicy,
        create_request_queue,
    )
    from vllm.v1.core.sched.scheduler import Scheduler

    from schedgym.plugins.vllm.scheduler import TESTED_VLLM

    low, high = (Version(v.lstrip("<>=")) for v in TESTED_VLLM)
    assert low <= Version(vllm.__version__.split("+")[0]) < high, (
        f"vLLM {vllm.__version__} is outside the plugin's tested range {TESTED_VLLM}"
    )
    source = inspect.getsource(Scheduler.schedule)
    # hook 1: the step's token budget is read from this attribute at the start of schedule()
    assert "token_budget = self.max_num_scheduled_tokens" in source
    # hook 2: waiting requests are admitted from self.waiting, an FCFS deque, in its order
    assert "request_queue = self.waiting" in source and "peek_request()" in source
    assert isinstance(create_request_queue(SchedulingPolicy.FCFS), FCFSRequestQueue)


def test_outputs_equal_stock_and_admissions_follow_the_policy(stock, plugged, policy_dir):
    stock_tokens, stock_steps = stock
    tokens, steps = run(plugged)
    sched = scheduler_of(plugged)
    assert tokens == stock_tokens  # same tokens for every request, whatever the order
    assert not sched.fallbacks, sched.fallbacks
    assert any(s.preempted_req_ids for s in stock_steps), "the workload should preempt"
    assert any(s.preempted_req_ids for s in steps)

    by_step = {s: out for s, out in enumerate(steps, start=1)}
    decided = [d for d in sched.decisions if "budget" in d]
    assert len(decided) >= 5
    from schedgym.plugins.vllm.policy import ServingPolicy

    fresh = ServingPolicy(policy_dir, ttft_s=1.0, tbt_s=0.1)
    fresh.load_model()
    exact = 0
    for d in decided:
        out = by_step[d["step"]]
        assert out.total_num_scheduled_tokens <= d["budget"]
        new = [r.req_id for r in out.scheduled_new_reqs] + [
            r for r in out.scheduled_cached_reqs.req_ids if r in d["admit"]
        ]
        admitted = [r for r in d["admit"] if r in set(new)]
        # vLLM admits in the policy's order and stops where the policy stopped or where KV
        # allocation fails; nothing the policy held back is admitted
        assert admitted == d["admit"][: len(admitted)]
        assert set(new) <= set(d["admit"])
        exact += admitted == d["admit"]
        # the logged decisions are what the graph chooses on the logged observations
        for obs, mask, action in d["trace"]:
            assert fresh.act(obs, mask) == action
    assert exact / len(decided) > 0.9, f"{exact}/{len(decided)} steps admitted as decided"


def test_a_corrupt_model_file_runs_fcfs_and_finishes_every_request(
    stock, model_dir, policy_dir, tmp_path, caplog
):
    broken = tmp_path / "broken"
    shutil.copytree(policy_dir, broken)
    (broken / "policy.onnx").write_bytes(b"not an onnx graph")
    llm = make_llm(model_dir, broken)
    tokens, steps = run(llm)
    sched = scheduler_of(llm)
    assert tokens == stock[0]
    assert sched.fallbacks["model"] >= len(steps) - 1
    assert set(sched.fallbacks) == {"model"}
    # FCFS: the same steps as the stock scheduler
    assert step_tokens(steps) == step_tokens(stock[1])


def test_an_exception_at_step_k_falls_back_for_that_step_only(stock, plugged):
    sched = scheduler_of(plugged)
    decide = sched.policy.decide
    calls = {"n": 0}

    def flaky(state, record=False):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected")
        return decide(state, record)

    sched.policy.decide = flaky
    before = sched.fallbacks["exception"]
    try:
        tokens, _ = run(plugged)
    finally:
        sched.policy.decide = decide
    assert sched.fallbacks["exception"] == before + 1
    assert tokens == stock[0]
    assert not sched.waiting and not sched.running


def test_a_slow_decision_and_a_starving_request_run_fcfs(stock, model_dir, policy_dir):
    llm = make_llm(model_dir, policy_dir, deadline_ms=0.0)
    tokens, steps = run(llm)
    sched = scheduler_of(llm)
    assert tokens == stock[0]
    assert sched.fallbacks["deadline"] >= 1 and set(sched.fallbacks) == {"deadline"}
    assert step_tokens(steps) == step_tokens(stock[1])
    # every request has waited longer than 0 s: all are admitted in FCFS order (all arrive
    # together, so in workload order), whatever the policy prefers
    sched.schedgym = dataclasses.replace(sched.schedgym, max_wait_s=0.0, deadline_ms=1e9)
    tokens, steps = run(llm)
    assert tokens == stock[0]
    assert not sched.fallbacks.keys() - {"deadline"}
    first_admitted = list(
        dict.fromkeys(
            int(r.req_id.split("-")[0]) % N_REQUESTS for s in steps for r in s.scheduled_new_reqs
        )
    )
    assert first_admitted == sorted(first_admitted) == list(range(N_REQUESTS))


def test_the_async_variant_runs_the_policy_in_the_engine(stock, model_dir, policy_dir):
    # vLLM's GPU default; the CPU backend runs it synchronously, which is what can be checked
    # on this machine: the policy decides and the outputs equal the stock scheduler's
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    llm = make_llm(
        model_dir,
        policy_dir,
        cls="PolicyAsyncScheduler",
        log_decisions=True,
        deadline_ms=1e9,
        ttft_s=1e6,
        tbt_s=1e6,
    )
    sched = scheduler_of(llm)
    assert isinstance(sched, AsyncScheduler)
    tokens, _ = run(llm)
    assert tokens == stock[0]
    assert not sched.fallbacks
    assert len([d for d in sched.decisions if "budget" in d]) >= 5


def test_a_policy_for_another_encoder_is_refused_at_start(model_dir, policy_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(policy_dir, other)
    spec = json.loads((other / "spec.json").read_text())
    spec["encoder_version"] = "batching-features-0"
    (other / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(Exception, match="encoder batching-features-0; this plugin serves"):
        make_llm(model_dir, other)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ttft_s", 0),
        ("ttft_s", -1.0),
        ("ttft_s", float("nan")),
        ("ttft_s", "1.0"),
        ("tbt_s", float("inf")),
        ("deadline_ms", -1),
        ("max_wait_s", float("nan")),
        ("threads", "two"),
        ("threads", 0),
        ("threads", -1),
        ("threads", 1.5),
        ("log_decisions", "yes"),
        ("policy", 3),
    ],
)
def test_a_bad_config_value_is_refused_at_start_naming_the_key(key, value):
    # each of these made every decision raise (the step silently FCFS for the whole run) or
    # onnxruntime's session fail (the model fallback) instead of refusing the engine
    from types import SimpleNamespace

    from schedgym.plugins.vllm.policy import PolicySpecError
    from schedgym.plugins.vllm.scheduler import PluginConfig

    raw = {"policy": "exported/batching", key: value}
    with pytest.raises(PolicySpecError, match=f"additional_config key '{key}' must be") as err:
        PluginConfig.from_vllm(SimpleNamespace(additional_config={"schedgym": raw}))
    assert "\n" not in str(err.value)
    # the values the tests and docs use are taken
    ok = {"ttft_s": 1e6, "tbt_s": 1, "deadline_ms": 0.0, "max_wait_s": float("inf"), "threads": 2}
    cfg = PluginConfig.from_vllm(
        SimpleNamespace(additional_config={"schedgym": {"policy": "p", **ok}})
    )
    assert (cfg.ttft_s, cfg.threads, cfg.deadline_ms) == (1e6, 2, 0.0)


@pytest.mark.parametrize("part", ["inputs", "actions", "engine", "list", "budgets", "n_actions"])
def test_a_spec_missing_a_part_is_refused_in_one_line(policy_dir, tmp_path, part):
    from schedgym.plugins.vllm.policy import PolicySpecError, ServingPolicy

    folder = tmp_path / "policy"
    shutil.copytree(policy_dir, folder)
    spec = json.loads((folder / "spec.json").read_text())
    message = f"lacks the key '{part}'"
    if part == "list":
        spec, message = [1, 2], "expected a JSON object, got list"
    elif part == "budgets":
        spec["engine"]["budgets"], message = ["512"], "has an invalid 'engine'"
    elif part == "n_actions":
        spec["actions"]["n_actions"] += 1
        message = "actions.n_actions, 137, is not its 128 waiting rows, 6 budgets"
    else:
        del spec[part]
    (folder / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(PolicySpecError) as err:
        ServingPolicy(folder, ttft_s=1.0, tbt_s=0.1)
    text = str(err.value)
    assert text.startswith(f"{folder / 'spec.json'}: ") and message in text, text
    assert "\n" not in text


def test_the_simulator_schedules_like_vllm_step_by_step_on_200_azure_requests():
    """heuristic:vllm-v1 in the simulator and vLLM's own scheduler, on the first 200 requests
    of the Azure conversation trace (lengths scaled to max_model_len 1024), all arriving at
    once: the same tokens for the same requests at every step, preemptions included."""
    script = GYM_VS_VLLM
    prompt, output = script.azure_slice(200, 1024)
    shape = {"block": BLOCK, "kv_blocks": 128, "budget": 512, "seqs": 16}
    real, real_preempted, llm = script.run_vllm(prompt, output, max_model_len=1024, **shape)
    _ENGINES.append(llm)
    usable = scheduler_of(llm).kv_cache_manager.block_pool.get_num_free_blocks()
    sim, sim_preempted = script.simulate(prompt, output, **{**shape, "kv_blocks": usable})
    result = script.compare(sim, real)
    assert real_preempted > 0 and sim_preempted == real_preempted
    assert result["identical_share"] == 1.0, result["first_difference"]
