"""Learned next-use eviction for MoE expert offloading: Belady's rule on predicted next uses.

Belady's MIN evicts the cached expert whose next use is furthest away; online that distance is
unknown. Following the predictions (Lykouris & Vassilvitskii, "Competitive caching with machine
learned advice", ICML 2018) as LRB does for CDN caches (Song et al., "Learning Relaxed Belady
for content distribution network caching", NSDI 2020: a regressor of the log time to an
object's next request from its past), `NextUseNet` predicts each cached expert's log distance,
in visits (MoE layers of a decode step), to its next use, and `NextUsePolicy` evicts the expert
predicted furthest. Training imitates Belady as PARROT does (Liu et al., "An imitation learning
approach for cache replacement", ICML 2020): round 0 labels the states MoE-Infinity visits,
optional DAgger rounds (off by default, docs/results.md) the states the last round's policy
visits; a label is the candidate's true next use in the recorded routing (hindsight), features
are only what a serving system has seen.

Features of expert ``g = (layer j, expert e)`` at an eviction (`FEATURES`, `ExpertFeatures`):
the visits until layer ``j`` runs again; the probability that it is needed then under a routing
model fitted at reset on the trace's offline-profiling routing (``RoutingTrace.calibration``,
what ``heuristic:static`` pins from; `schedgym.baselines.moe.RoutingModel`, which
``heuristic:next-use`` follows by a fixed rule); MoE-Infinity's predicted activation
probability and its running sequence's activation ratio (`schedgym.baselines.moe.MoEInfinity`);
frequency and recency over the episode; its use in each of the last 8 decode steps and three
moving averages of that use. None reads a routing choice the env has not revealed.

The policy never prefetches: with one copy engine and an expert copy 20x a layer's compute (the
tiny MoE priced as Mixtral-8x7B on an H100), a prefetch hides at most that compute and costs a
whole copy when wrong; MoE-Infinity's stall on ``moe/tinymoe-test`` is the same within 0.2 %
with its prefetching off (docs/results.md). With ``cpu_offload`` a miss runs on the CPU only
when no cached expert may be evicted.

A checkpoint folder holds ``model.zip`` (``policy.pth``: the network's state dict,
``data.json``: its feature names and width, as stable-baselines3's zips do) and
``config.json`` (``"algo": "nextuse"``, the `NextUseConfig`); `train` writes both and
``training.json`` (each round's loss and validation). Name it ``nextuse:PATH``.
"""

from __future__ import annotations

import io
import json
import pickle
import tempfile
import time
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from tqdm import tqdm

from schedgym.agents.runs import summary_writer
from schedgym.baselines.moe import MoEInfinity, PredictedNextUse, _CachePolicy, _core_of
from schedgym.envs.moe.core import MoECore, run_policy
from schedgym.envs.moe.env import MoEOffloadEnv
from schedgym.errors import SchedgymError
from schedgym.policy import PolicyKind, unwrap_env
from schedgym.workloads.moe import RoutingTrace, save_npz

HISTORY = 8  # decode steps of use kept as features
DECAYS = (0.5, 0.8, 0.95)  # of the moving averages of use
FEATURES = (
    "layers_ahead",  # visits until its layer runs again / layers (1/L .. 1)
    "p_next",  # routing model: probability it is needed at that visit
    "sequence_share",  # its share of the running sequences' expert choices so far
    "moe_infinity",  # MoE-Infinity's predicted activation probability
    "frequency",  # uses per decode step so far
    "recency",  # layers / (layers + visits since its last use); 0 if never used
    "profile",  # share of profiling tokens that chose it
    "sequence_progress",  # steps since every lane last began a sequence / 64, at most 1
    *(f"used_{k}_steps_ago" for k in range(1, HISTORY + 1)),  # 1 if that step needed it
    *(f"use_ema_{d}" for d in DECAYS),  # moving averages of "a step needed it"
)
ALGO = "nextuse"


def _core(env: Any) -> MoECore:
    core = _core_of(env)
    if not isinstance(core, MoECore):
        raise SchedgymError(
            f"{ALGO} policies play schedgym/MoEOffload-v0 (the moe env) only, not "
            f"{type(unwrap_env(env)).__name__}"
        )
    return core


class ExpertFeatures:
    """`FEATURES` of every expert at a core's decisions, from the past only (module docstring).

    `reset` fits ``heuristic:next-use``'s routing model on the trace's calibration routing
    (``SchedgymError`` when it has none); `__call__` gives ``[n_global, len(FEATURES)]`` float32
    for the core's current decision. Folds each decode step into the history once all its
    layers have run."""

    def __init__(self) -> None:
        self.mi = MoEInfinity()
        self.rule = PredictedNextUse()

    def reset(self, core: MoECore) -> None:
        trace = core.episode.trace
        if trace.calibration is None:
            raise SchedgymError(
                f"{ALGO} policies fit their routing model on offline profiling, and trace "
                f"{trace.name!r} has no calibration routing (a .npz's calibration array)"
            )
        self.rule.reset(core)
        self.mi.reset(core)
        G = core.n_global
        self.history = np.zeros((HISTORY, G))
        self.ema = np.zeros((len(DECAYS), G))
        self.tokens = 0  # steps of the running sequences folded in
        self.folded = 0

    def _fold(self, core: MoECore) -> None:
        while self.folded < core.step:
            s = self.folded
            if self.rule.fresh[s]:
                self.history[:] = 0.0
                self.ema[:] = 0.0
                self.tokens = 0
            use = self.rule.step_use(core, s, core.n_layers).ravel()
            self.history = np.roll(self.history, 1, axis=0)
            self.history[0] = use
            for i, d in enumerate(DECAYS):
                self.ema[i] = d * self.ema[i] + (1.0 - d) * use
            self.tokens += 1
            self.folded += 1

    def __call__(self, core: MoECore) -> np.ndarray:
        self._fold(core)
        L, s = core.n_layers, core.step
        ahead, p = self.rule.next_use(core)
        mi_prob = self.mi._probability(core)
        fresh = bool(self.rule.fresh[s])
        if fresh:
            share = np.zeros(core.n_global)
        else:
            share = self.mi.lane_eam.sum(axis=0) / max(1.0, float(self.mi.lane_tokens.sum()))
        used = core.last_use >= 0
        columns = [
            ahead / L,
            p,
            share,
            mi_prob,
            core.use_count / max(1, s),
            np.where(used, L / (L + core.visit - core.last_use), 0.0),
            self.rule.routing.prior.ravel(),
            np.full(core.n_global, 0.0 if fresh else min(self.tokens, 64) / 64),
            *self.history,
            *self.ema,
        ]
        return np.stack(columns, axis=1).astype(np.float32)


class NextUseNet(th.nn.Module):
    """An MLP from one expert's features (``[..., len(FEATURES)]``) to its predicted log
    distance, in visits, to its next use (``[...]``); experts are scored independently, so
    one network serves any number of experts."""

    def __init__(self, n_features: int = len(FEATURES), hidden: int = 16):
        super().__init__()
        self.n_features, self.hidden = n_features, hidden
        self.body = th.nn.Sequential(
            th.nn.Linear(n_features, hidden),
            th.nn.ReLU(),
            th.nn.Linear(hidden, hidden),
            th.nn.ReLU(),
            th.nn.Linear(hidden, 1),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.body(x).squeeze(-1)

    def save(self, path: Path) -> None:
        """Write ``path`` (a zip): ``policy.pth`` (the state dict) and ``data.json``. Entries
        carry a fixed date, so the same weights give the same bytes (the leaderboard digests
        them)."""
        buffer = io.BytesIO()
        th.save(self.state_dict(), buffer)
        data = {"algo": ALGO, "features": list(FEATURES), "hidden": self.hidden}
        with zipfile.ZipFile(path, "w") as z:
            for name, payload in (
                ("policy.pth", buffer.getvalue()),
                ("data.json", json.dumps(data, indent=1)),
            ):
                z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)

    @classmethod
    def load(cls, path: Path) -> NextUseNet:
        """Read a zip `save` wrote; ``SchedgymError`` naming it when it is not one (unreadable,
        a ``data.json`` without a width, weights of another shape), or was trained on other
        features than this version's `FEATURES`."""
        try:
            with zipfile.ZipFile(path) as z:
                data = json.loads(z.read("data.json"))
                state = th.load(io.BytesIO(z.read("policy.pth")), weights_only=True)
        except (OSError, KeyError, ValueError, RuntimeError, zipfile.BadZipFile) as e:
            raise SchedgymError(f"{path}: not a {ALGO} checkpoint ({e})") from e
        except pickle.UnpicklingError as e:  # torch's advice to unpickle it anyway is not ours
            raise SchedgymError(f"{path}: not a {ALGO} checkpoint (unreadable weights)") from e
        if not isinstance(data, dict) or data.get("features") != list(FEATURES):
            raise SchedgymError(
                f"{path}: trained on features "
                f"{data.get('features') if isinstance(data, dict) else None}, this version "
                f"computes {list(FEATURES)}; retrain it (scripts/train_nextuse.py)"
            )
        hidden = data.get("hidden")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise SchedgymError(
                f"{path}: data.json's hidden must be an integer >= 1, not {hidden!r}"
            )
        net = cls(len(FEATURES), hidden)
        try:
            net.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as e:
            raise SchedgymError(f"{path}: its weights do not fit its data.json ({e})") from e
        net.eval()
        return net


class NextUsePolicy(_CachePolicy):
    """Evict the cached expert whose next use `NextUseNet` predicts furthest away; never
    prefetch (module docstring). ``spec``: a checkpoint folder (``model.zip``) or the zip.

    ``reset`` raises ``SchedgymError`` for an env other than the moe env or a trace without
    calibration routing. With ``collect`` set, each eviction appends the candidates' features
    and their true log next-use distances (hindsight, for training only) to ``rows``."""

    kind: PolicyKind = "learned"

    def __init__(
        self, spec: str | Path | NextUseNet, name: str | None = None, collect: bool = False
    ):
        if isinstance(spec, NextUseNet):
            self.net = spec
        else:
            path = Path(spec)
            if not path.exists():
                raise SchedgymError(f"{path}: no such {ALGO} checkpoint (folder or model.zip)")
            # one core per playing policy, as PPOPolicy: torch's default pool on a shared
            # 2-core machine made OLMoE's 256-row evictions about 20x slower
            th.set_num_threads(1)
            self.net = NextUseNet.load(path / "model.zip" if path.is_dir() else path)
        self.name = name or f"{ALGO}:{spec}"
        self.features = ExpertFeatures()
        self.collect = collect
        self.rows: list[tuple[np.ndarray, np.ndarray]] = []

    def reset(self, env: Any) -> None:
        core = _core(env)
        self.core = core
        self.features.reset(core)
        if self.collect:
            self._next = _next_uses(core)

    def evict(self, core: MoECore, candidates: np.ndarray) -> int:
        x = self.features(core)
        if self.collect:
            self.rows.append(_labels(core, x, candidates, self._next))
        return self._choose(core, x, candidates)

    def _choose(self, core: MoECore, x: np.ndarray, candidates: np.ndarray) -> int:
        with th.no_grad():
            score = self.net(th.from_numpy(x)).numpy()
        return int(np.where(candidates, score, -np.inf).argmax())


def _next_uses(core: MoECore) -> list[np.ndarray]:
    """Per expert, the visits that need it, ascending."""
    ep = core.episode
    visit = np.repeat(np.arange(ep.n_visits), np.diff(ep.need_ptr))
    order = np.argsort(ep.need_ids, kind="stable")
    bounds = np.searchsorted(ep.need_ids[order], np.arange(core.n_global + 1))
    return [visit[order[bounds[g] : bounds[g + 1]]] for g in range(core.n_global)]


def _labels(
    core: MoECore, x: np.ndarray, candidates: np.ndarray, uses: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' features and log distance to their next use after this visit; an
    expert never used again counts as used just past the episode's end (``n_visits + L``)."""
    v, never = core.visit, core.episode.n_visits + core.n_layers
    idx = np.flatnonzero(candidates)
    nxt = np.full(idx.size, never, float)
    for i, g in enumerate(idx):
        later = uses[g][np.searchsorted(uses[g], v, side="right") :]
        if later.size:
            nxt[i] = later[0]
    return x[idx], np.log(nxt - v)


class _Teacher(NextUsePolicy):
    """Round 0's player: MoE-Infinity's evictions, read from the MoE-Infinity state the
    features already keep, recording the same rows as a collecting `NextUsePolicy`."""

    def __init__(self, net: NextUseNet) -> None:
        super().__init__(net, collect=True)

    def _choose(self, core: MoECore, x: np.ndarray, candidates: np.ndarray) -> int:
        return self.features.mi.evict(core, candidates)


def profiling_holdout(trace: RoutingTrace, fold: int = 0) -> RoutingTrace:
    """A trace to validate on that is none of the test routing: one half of ``trace``'s
    offline-profiling routing (``calibration``, other text of the same domain), with the other
    half as its own profiling routing, cut into sequences as long as ``trace``'s longest.
    ``fold`` 0 plays the second half, 1 the first (two-fold cross-validation).

    Training on one domain and validating on the same windows of it rewards what does not
    transfer; this validates on the deployment domain's profiling text instead. Raises
    ``SchedgymError`` when ``trace`` has no calibration routing or ``fold`` is not 0 or 1."""
    if fold not in (0, 1):
        raise SchedgymError(f"fold must be 0 or 1, got {fold!r}")
    if trace.calibration is None:
        raise SchedgymError(f"trace {trace.name!r} has no calibration routing to validate on")
    halves = np.array_split(trace.calibration, 2)
    played, fitted = (halves[1], halves[0]) if fold == 0 else (halves[0], halves[1])
    length = int(np.diff(np.r_[trace.seq_starts, trace.n_tokens]).max())
    return RoutingTrace(
        played,
        trace.n_experts,
        np.arange(0, played.shape[0], length),
        name=f"{trace.name} profiling, fold {fold}",
        source=f"{ALGO}.profiling_holdout of {trace.name}",
        calibration=fitted,
    )


@dataclass
class NextUseConfig:
    """One training run's settings, saved as ``OUT/config.json`` (the leaderboard reads
    ``algo`` and ``env``)."""

    out: str = "policies/moe-nextuse"
    env: str = "moe"
    case: str = "tinymoe-code"  # the training routing
    # the case whose profiling routing validates (`profiling_holdout`; never its test routing)
    validate_on: str = "tinymoe-docs"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    rounds: int = 0  # DAgger rounds after round 0 (MoE-Infinity's states)
    episodes: int = 16  # training episodes per round; round r plays seeds r*episodes + i
    epochs: int = 20  # passes over all rows gathered so far, per round
    batch_size: int = 1024
    learning_rate: float = 3e-3
    hidden: int = 16
    tensorboard: str | None = "runs"
    torch_threads: int = 1
    algo: str = ALGO


def _validation_cases(cfg: NextUseConfig, folder: Path) -> tuple[list[str], dict[str, Any]]:
    """Both folds of `profiling_holdout` of ``cfg.validate_on``, written under ``folder``: their
    case names and env arguments."""
    probe = MoEOffloadEnv(cfg.validate_on, **cfg.env_kwargs).make_core(cfg.validate_on, 0)
    cases = []
    for fold in (0, 1):
        path = folder / f"validation-{fold}.npz"
        save_npz(profiling_holdout(probe.episode.trace, fold), path)
        cases.append(f"file:{path}")
    return cases, {**cfg.env_kwargs, "model": probe.meta["model"], "tokens": None}


def _stall(policy: Any, cases: Iterable[str], kwargs: dict[str, Any], seed: int = 0) -> float:
    """Mean stall per token (s) of ``policy`` on ``cases``' episodes of ``seed``."""
    values = []
    for case in cases:
        core = MoEOffloadEnv(case, **kwargs).make_core(case, seed)
        run_policy(core, policy)
        values.append(core.metrics()["stall_per_token_s"])
    return float(np.mean(values))


def train(cfg: NextUseConfig, progress: bool = True) -> dict[str, Any]:
    """DAgger on Belady's next uses (module docstring), read top to bottom.

    Round 0 plays MoE-Infinity (without prefetching) on ``episodes`` training episodes and
    keeps every eviction's candidates with their true next-use distances; each later round
    plays the last round's policy on fresh episodes and adds its rows. After every round the
    network refits on all rows (mean squared error of the log distance) and plays the
    validation routing (both folds of `profiling_holdout` of ``validate_on``); the round with
    the lowest validation stall ships as ``model.zip``. The log holds MoE-Infinity's and
    ``heuristic:next-use``'s stall on the same validation routing beside each round's.
    Returns the training log, also written to ``training.json``. Raises ``SchedgymError`` for
    a count below its least (``rounds`` 0, the others 1) or an ``out`` that is a file."""
    for name, least in (("rounds", 0), ("episodes", 1), ("epochs", 1), ("batch_size", 1)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SchedgymError(f"{name} must be an integer >= {least}, got {value!r}")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise SchedgymError(f"{out} is a file; the checkpoint needs a folder there")
    th.manual_seed(cfg.seed)
    th.set_num_threads(cfg.torch_threads)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    if cfg.tensorboard:
        writer = summary_writer(cfg.tensorboard, cfg.env, ALGO)
    start = time.perf_counter()
    scratch = tempfile.TemporaryDirectory()
    val_cases, val_kwargs = _validation_cases(cfg, Path(scratch.name))
    reference = _stall(MoEInfinity(), val_cases, val_kwargs)
    rule = _stall(PredictedNextUse(), val_cases, val_kwargs)
    net = NextUseNet(len(FEATURES), cfg.hidden)
    opt = th.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    log: dict[str, Any] = {
        "moe_infinity_validation": reference,
        "next_use_validation": rule,
        "rounds": [],
    }
    best = np.inf
    bar = tqdm(total=(cfg.rounds + 1) * cfg.episodes, disable=not progress, unit="episode")
    for r in range(cfg.rounds + 1):
        player = _Teacher(net) if r == 0 else NextUsePolicy(net, collect=True)
        seeds = range(r * cfg.episodes, (r + 1) * cfg.episodes)
        for seed in seeds:
            run_policy(MoEOffloadEnv(cfg.case, **cfg.env_kwargs).make_core(cfg.case, seed), player)
            bar.update()
        xs += [x for x, _ in player.rows]
        ys += [y for _, y in player.rows]
        x, y = th.from_numpy(np.concatenate(xs)), th.from_numpy(np.concatenate(ys)).float()
        net.train()
        for _ in range(cfg.epochs):
            for batch in th.randperm(len(x)).split(cfg.batch_size):
                loss = ((net(x[batch]) - y[batch]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with th.no_grad():
            fit = float(((net(x) - y) ** 2).mean())
        val = _stall(NextUsePolicy(net), val_cases, val_kwargs)
        if val < best:
            best = val
            net.save(out / "model.zip")
        entry = {"round": r, "rows": len(x), "mse": fit, "validation": val}
        log["rounds"].append(entry)
        bar.set_postfix(mse=f"{fit:.3f}", val=f"{val / reference:.3f}x", rule=f"{val / rule:.3f}x")
        if writer is not None:
            writer.add_scalar("train/mse_log_distance", fit, r)
            writer.add_scalar("sched/stall_per_token_s", val, r)
            writer.add_scalar("sched/ratio_to_moe_infinity", val / reference, r)
            writer.add_scalar("sched/ratio_to_next_use", val / rule, r)
    bar.close()
    scratch.cleanup()
    if writer is not None:
        writer.close()
    log["shipped_round"] = min(log["rounds"], key=lambda e: e["validation"])["round"]
    log["wall_s"] = time.perf_counter() - start
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    (out / "training.json").write_text(json.dumps(log, indent=1) + "\n")
    return log
