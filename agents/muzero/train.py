"""Train Gumbel MuZero by self-play on any schedgym environment, read top to bottom.

1. ``MuZeroConfig`` names the environment, its training generator (the env's ``case``), the
   validation cases, the model (``simulator`` or ``learned``) and the search budget.
2. `train` builds ``n_envs`` envs and plays them in lockstep: one `gumbel_search` call plans the
   next decision of every env at once (Gumbel noise on, so self-play explores), and each
   decision's observation, mask, action, reward, improved policy and root value go into the
   episode's history; finished episodes enter the `ReplayBuffer`.
3. Every ``decisions_per_update`` decisions, one gradient step on a batch of positions
   (`ReplayBuffer.sample`): the improved policy as the policy target (cross-entropy), the
   ``td_steps``-step return bootstrapped from the search value as the value target (MSE), and,
   for the learned model, the ``unroll_steps``-step unroll of the dynamics with the reward,
   value and policy losses at every step (Schrittwieser et al., Nature 2020, Methods:
   "Training"). The simulator model trains only ``h`` and ``f``.
4. Every ``eval_every`` decisions the network plans deterministically (`MuZeroPolicy`) on the
   validation cases; the best checkpoint so far is ``model.pt``, the latest ``last.pt``
   (``--resume`` continues it; the replay buffer restarts empty). TensorBoard logs under
   ``runs/ENV/muzero_N`` (one folder per run, `schedgym.agents.runs`) with the problem's
   metrics under ``sched/``.

``init_from`` (a PPO policy folder) warm-starts ``h`` and ``f`` from PPO's encoder, actor and
critic (`MuZeroNet.load_ppo`): planning then starts from a prior and a value that already
schedule well, which is what makes a useful policy reachable in minutes on two cores.
``uniform_prior`` starts instead from logits all 0 (`uniform_prior`), the start of
expert iteration for a rollout planner whose heuristic is better than any network at hand
(``scripts/train_muzero.py dag``). Either start is validated before self-play and kept as
``model.pt`` if self-play does not beat it.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F
from tqdm import tqdm

from schedgym.agents.imitation import generator_kwargs
from schedgym.agents.muzero.models import make_model
from schedgym.agents.muzero.networks import MuZeroNet, obs_to_tensor
from schedgym.agents.muzero.policy import MuZeroPolicy, load_checkpoint, save_checkpoint
from schedgym.agents.muzero.search import SearchConfig, gumbel_search
from schedgym.agents.ppo import TrainConfig, baseline_scores, validation_episodes
from schedgym.agents.runs import summary_writer
from schedgym.episode import make_env, run_episode
from schedgym.errors import SchedgymError
from schedgym.registry import env_entry


@dataclass
class MuZeroConfig:
    """One training run's settings (units in the comments), saved as ``OUT/config.json``; the
    leaderboard reads ``algo``, ``eval_simulations`` (else ``simulations``) and
    ``checkpoint_files`` from that file."""

    env: str
    out: str
    steps: int = 20_000  # self-play decisions, all envs together
    n_envs: int = 4
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    val_cases: list[str] = field(default_factory=list)
    eval_every: int = 5_000  # decisions between validations
    model: str = "simulator"  # or "learned"
    rollout: str | None = None  # a policy of the env valuing leaves by playing out (simulator)
    rollout_mix: float = 1.0  # AlphaGo's lambda: leaf value (1 - mix) * v_net + mix * return
    simulations: int = 16
    max_considered: int = 16
    eval_simulations: int | None = None  # the shipped checkpoint's budget (default: simulations)
    gamma: float = 1.0  # episodic scheduling: the return is the objective, undiscounted
    td_steps: int = 50
    unroll_steps: int = 5  # learned model only
    batch_size: int = 64
    decisions_per_update: int = 4
    buffer_decisions: int = 50_000
    learning_rate: float = 1e-4
    value_coef: float = 0.25
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    init_from: str | None = None  # a PPO policy folder to warm-start h and f from
    uniform_prior: bool = False  # start from logits all 0 (`uniform_prior`)
    fortify: bool = False  # validation and the saved policy follow the best sequence found
    anchor: bool = False  # the root prior ranks the rollout policy's action first (ties to it)
    c_scale: float = 0.1  # mctx's value_scale: how far completed Q may move the prior's logits
    torch_threads: int = 1
    tensorboard: str | None = "runs"
    # what picks the shipped checkpoint: the env's primary metric in its own direction, or this
    # metric, lower is better (a task that lacks the primary one: memmap's pack has no time)
    val_metric: str | None = None
    algo: str = "muzero"  # read by the leaderboard to name the policy kind
    # what the leaderboard hashes as this policy's weights (evaluate.checkpoint_files)
    checkpoint_files: list[str] = field(default_factory=lambda: ["model.pt"])

    def planner(self) -> dict[str, Any]:
        """`make_model`'s keywords, as the checkpoint stores them."""
        return {
            "kind": self.model,
            "env": self.env,
            "rollout": self.rollout,
            "mix": self.rollout_mix,
            "fortify": self.fortify,
            # absent when off, so checkpoints saved before it existed resume unchanged
            **({"anchor": True} if self.anchor else {}),
        }

    def order(self) -> str | None:
        """The memory env's buffer order self-play ran in (``env_kwargs``), which the saved
        policy keeps on any env (`MuZeroPolicy.reset`); None for the other envs."""
        return self.env_kwargs.get("order") if env_entry(self.env).name == "memmap" else None

    def search(self, evaluation: bool = False) -> SearchConfig:
        n = (self.eval_simulations or self.simulations) if evaluation else self.simulations
        return SearchConfig(
            simulations=n,
            max_considered=self.max_considered,
            gamma=self.gamma,
            c_scale=self.c_scale,
            gumbel_scale=0.0 if evaluation else 1.0,
        )


@dataclass
class Episode:
    """One finished self-play episode: ``obs`` (dict of ``(T, ...)`` arrays), ``masks``
    ``(T, A)`` bool, ``actions`` ``(T,)``, ``rewards`` ``(T,)`` (after each action),
    ``policies`` ``(T, A)`` improved policies, ``values`` ``(T,)`` root search values."""

    obs: dict[str, np.ndarray]
    masks: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    policies: np.ndarray
    values: np.ndarray

    def value_targets(self, td_steps: int, gamma: float) -> np.ndarray:
        """``z_t = sum_{i<n} gamma^i r_{t+i} + gamma^n v_{t+n}`` (``v`` past the end is 0)."""
        n, T = td_steps, len(self.rewards)
        discounts = gamma ** np.arange(n)
        padded = np.concatenate([self.rewards, np.zeros(n)])
        z = np.array([padded[t : t + n] @ discounts for t in range(T)])
        tail = np.concatenate([self.values, np.zeros(n)])[n : n + T]
        return z + gamma**n * tail


class History:
    """The decisions of one running episode, turned into an `Episode` at its end."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, obs, mask, action, reward, policy, value) -> None:
        self.rows.append(
            ({k: np.array(v) for k, v in obs.items()}, mask, action, reward, policy, value)
        )

    def finish(self) -> Episode:
        obs, masks, actions, rewards, policies, values = zip(*self.rows, strict=True)
        self.rows = []
        return Episode(
            {k: np.stack([o[k] for o in obs]) for k in obs[0]},
            np.stack(masks),
            np.array(actions),
            np.array(rewards, float),
            np.stack(policies).astype(np.float32),
            np.array(values, float),
        )


class ReplayBuffer:
    """The latest episodes, up to ``capacity`` decisions; positions sampled uniformly."""

    def __init__(self, capacity: int, td_steps: int, gamma: float, rng: np.random.Generator):
        self.capacity, self.td_steps, self.gamma, self.rng = capacity, td_steps, gamma, rng
        self.episodes: list[tuple[Episode, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(e.actions) for e, _ in self.episodes)

    def add(self, episode: Episode) -> None:
        self.episodes.append((episode, episode.value_targets(self.td_steps, self.gamma)))
        while len(self) > self.capacity and len(self.episodes) > 1:
            self.episodes.pop(0)

    def sample(self, batch: int, unroll: int) -> dict[str, np.ndarray]:
        """Positions ``t`` and the targets of steps ``t .. t + unroll``: ``obs`` at ``t``;
        ``actions``, ``rewards`` ``(batch, unroll)``; ``values``, ``policies``, ``masks``,
        ``valid`` ``(batch, unroll + 1, ...)``. Past an episode's end the state is absorbing:
        value and reward 0, no policy loss (``valid`` False), action 0."""
        lengths = np.array([len(e.actions) for e, _ in self.episodes])
        which = self.rng.choice(len(lengths), size=batch, p=lengths / lengths.sum())
        out: dict[str, list] = {k: [] for k in ("actions", "rewards", "values", "policies")}
        out.update(masks=[], valid=[], obs=[])
        for i in which:
            ep, z = self.episodes[i]
            T = len(ep.actions)
            t = int(self.rng.integers(T))
            idx = np.arange(t, t + unroll + 1)
            valid = idx < T
            safe = np.minimum(idx, T - 1)
            out["obs"].append({k: v[t] for k, v in ep.obs.items()})
            out["valid"].append(valid)
            out["values"].append(np.where(valid, z[safe], 0.0))
            out["policies"].append(ep.policies[safe] * valid[:, None])
            out["masks"].append(ep.masks[safe])
            out["actions"].append(np.where(valid[:-1], ep.actions[safe[:-1]], 0))
            out["rewards"].append(np.where(valid[:-1], ep.rewards[safe[:-1]], 0.0))
        batch_obs = out.pop("obs")
        arrays = {k: np.stack(v) for k, v in out.items()}
        arrays["obs"] = batch_obs
        return arrays


def policy_loss(logits: th.Tensor, mask: th.Tensor, target: th.Tensor) -> th.Tensor:
    """Cross-entropy ``-sum_a pi(a) log p(a)`` per row, ``p`` the softmax over ``mask``."""
    logp = th.log_softmax(logits.masked_fill(~mask, -1e9), dim=-1)
    return -(th.where(target > 0, target * logp, 0.0)).sum(-1)


def losses(net: MuZeroNet, batch: dict[str, Any], cfg: MuZeroConfig) -> dict[str, th.Tensor]:
    """MuZero's loss terms on a sampled batch (module docstring, step 3)."""
    latent, present = net.represent(obs_to_tensor(batch["obs"]))
    t = {k: th.as_tensor(v) for k, v in batch.items() if k != "obs"}
    unroll = cfg.unroll_steps if cfg.model == "learned" else 0
    terms = {"policy": th.zeros(()), "value": th.zeros(()), "reward": th.zeros(())}
    for k in range(unroll + 1):
        if k > 0:
            latent, reward = net.dynamics_step(latent, present, t["actions"][:, k - 1].long())
            terms["reward"] = terms["reward"] + F.mse_loss(reward, t["rewards"][:, k - 1].float())
        logits, value = net.predict(latent)
        target, valid = t["policies"][:, k].float(), t["valid"][:, k].float()
        if k == 0:
            mask = t["masks"][:, 0]
        else:
            # below the root the model plans under the root's entity padding: an entity that
            # arrived since (a request joining the batching queue) has no token there, so the
            # target keeps only the mass the model can place, renormalised (the mass outside
            # the mask once made the cross-entropy about 1e7)
            mask = net.presence_mask(present)
            target = target * mask
            kept = target.sum(-1, keepdim=True)
            valid = valid * (kept.squeeze(-1) > 0)
            target = target / kept.clamp(min=1e-12)
        ce = policy_loss(logits, mask, target)
        terms["policy"] = terms["policy"] + (ce * valid).sum() / valid.sum().clamp(min=1)
        terms["value"] = terms["value"] + F.mse_loss(value, t["values"][:, k].float())
    scale = 1.0 / (unroll + 1)
    terms = {k: v * scale for k, v in terms.items()}
    terms["total"] = terms["policy"] + cfg.value_coef * terms["value"] + terms["reward"]
    return terms


def uniform_prior(net: MuZeroNet) -> None:
    """Zero the policy head's output layer, so every logit is 0 until training moves it: a
    uniform prior over the legal actions (its inputs are not zero, so gradients still reach
    it). A rollout planner (`SimulatorModel` with a heuristic) then considers every legal
    action alike and decides by the rollouts' returns alone, where a randomly initialised
    head's logits (spread over 0.2-0.6 across the 15 legal actions of a ``daggen:30`` start)
    would outweigh small differences in return."""
    head = net.policy_head
    for layer in (head.score[-1], head.special):
        if layer is not None:
            th.nn.init.zeros_(layer.weight)
            th.nn.init.zeros_(layer.bias)


def build_net(cfg: MuZeroConfig, env: Any) -> tuple[MuZeroNet, dict[str, Any]]:
    layout = env.unwrapped.layout
    kwargs = {
        "options": layout.options_per_entity,
        "n_special": layout.n_special,
        "d_model": cfg.d_model,
        "layers": cfg.layers,
        "heads": cfg.heads,
    }
    return MuZeroNet(env.observation_space, **kwargs), kwargs


class Validator:
    """Plans deterministically on the validation cases; logs and keeps the best checkpoint."""

    def __init__(self, cfg: MuZeroConfig, heuristic: str | None):
        self.cfg = cfg
        self.entry = env_entry(cfg.env)
        self.baseline = baseline_scores(_as_ppo_config(cfg), heuristic) if heuristic else {}
        self.heuristic = heuristic
        self.history: list[dict[str, float]] = []

    def __call__(self, net: MuZeroNet, decisions: int) -> float:
        net.eval()
        policy = MuZeroPolicy(
            net=net,
            planner=self.cfg.planner(),
            search=self.cfg.search(True),
            order=self.cfg.order(),
        )
        rows = [
            run_episode(
                self.cfg.env,
                policy,
                case=case,
                seed=seed,
                env_kwargs=generator_kwargs(self.cfg.env_kwargs, 0),
            ).metrics
            for case, seed in validation_episodes(self.cfg.val_cases)
        ]
        means = {
            k: float(np.mean([r[k] for r in rows]))
            for k in rows[0]
            if isinstance(rows[0][k], int | float) and not isinstance(rows[0][k], bool)
        }
        self.history.append({"decisions": float(decisions), **means})
        if self.cfg.val_metric:
            return means[self.cfg.val_metric]
        primary = self.entry.primary_metric
        return means[primary] if self.entry.lower_is_better else -means[primary]


def _as_ppo_config(cfg: MuZeroConfig) -> TrainConfig:
    """The fields `baseline_scores` reads, for the heuristic's validation scores."""
    return TrainConfig(env=cfg.env, out=cfg.out, env_kwargs=cfg.env_kwargs, val_cases=cfg.val_cases)


def train(
    cfg: MuZeroConfig, heuristic: str | None = None, resume: bool = False, progress: bool = True
) -> MuZeroNet:
    """Self-play and learn (module docstring); writes ``model.pt``, ``last.pt``,
    ``config.json`` and ``training.json`` into ``cfg.out``. Raises ``SchedgymError`` on a
    ``--resume`` without ``last.pt`` or an unknown model."""
    if cfg.model not in ("simulator", "learned"):
        raise SchedgymError(f"--model must be simulator or learned, got {cfg.model!r}")
    if cfg.uniform_prior and cfg.init_from:
        raise SchedgymError(
            "uniform_prior (--uniform-prior) and init_from (--init-from) both set the starting "
            "prior: pick one"
        )
    th.set_num_threads(cfg.torch_threads)
    th.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    envs = [make_env(cfg.env, **generator_kwargs(cfg.env_kwargs, i)) for i in range(cfg.n_envs)]
    obs = [env.reset(seed=cfg.seed + 1000 * i)[0] for i, env in enumerate(envs)]
    net, net_kwargs = build_net(cfg, envs[0])
    try:
        search_cfg = cfg.search()  # a bad budget fails here, before anything is written
        model = make_model(**cfg.planner(), net=net, gamma=cfg.gamma)
    except ValueError as exc:
        raise SchedgymError(str(exc)) from None
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    optimizer = th.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    decisions, best = 0, np.inf
    if resume:
        if not (out / "last.pt").exists():
            raise SchedgymError(f"--resume: no checkpoint {out / 'last.pt'} to resume from")
        if (out / "model.pt").exists():
            data = load_checkpoint(out)[1]
            saved = {**data["planner"], "order": data.get("order")}
            now = {**cfg.planner(), "order": cfg.order()}
            if saved != now:
                # the validated model.pt would keep the old settings while config.json says new
                raise SchedgymError(
                    f"--resume: {out / 'model.pt'} plans with {saved}, these settings with "
                    f"{now}; resume with the same planner or train afresh"
                )
        state = th.load(out / "last.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        decisions, best = state["decisions"], state["best"]
    elif cfg.uniform_prior:
        uniform_prior(net)
    elif cfg.init_from:
        try:
            net.load_ppo(cfg.init_from)
        except ValueError as exc:
            raise SchedgymError(str(exc)) from None
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    buffer = ReplayBuffer(cfg.buffer_decisions, cfg.td_steps, cfg.gamma, rng)
    histories = [History() for _ in envs]
    validator = Validator(cfg, heuristic) if cfg.val_cases else None
    writer = None
    if cfg.tensorboard:
        writer = summary_writer(cfg.tensorboard, cfg.env, "muzero", resume)

    def checkpoint(file: str) -> None:
        save_checkpoint(out / file, net, net_kwargs, cfg.planner(), cfg.search(True), cfg.order())

    def validate() -> None:
        nonlocal best
        score = validator(net, decisions)
        if writer:
            for key, value in validator.history[-1].items():
                writer.add_scalar(f"sched/val_{key}", value, decisions)
            for key, value in validator.baseline.items():
                writer.add_scalar(f"sched/val_baseline_{key}", value, decisions)
        if score < best:
            best = score
            checkpoint("model.pt")

    start = time.perf_counter()
    starts_planning = cfg.init_from or cfg.uniform_prior or resume
    # the warm start is a candidate for the shipped checkpoint; a resumed run validated it
    # already, but a fresh run into an old folder must not leave that folder's model.pt standing
    if validator and starts_planning and not (resume and (out / "model.pt").exists()):
        validate()
    updates = decisions // cfg.decisions_per_update
    bar = tqdm(total=cfg.steps, initial=decisions, disable=not progress, unit="decision")
    next_eval = (decisions // cfg.eval_every + 1) * cfg.eval_every
    while decisions < cfg.steps:
        net.eval()
        result = gumbel_search(model, [e.unwrapped for e in envs], obs, search_cfg, rng)
        for i, env in enumerate(envs):
            mask = np.array(env.unwrapped.action_masks(), dtype=bool)  # a copy: kept for training
            action = int(result.action[i])
            step_obs, reward, term, trunc, info = env.step(action)
            histories[i].add(obs[i], mask, action, reward, result.policy[i], result.value[i])
            obs[i] = step_obs
            if term or trunc:
                buffer.add(histories[i].finish())
                if writer:
                    for key, value in (info.get("metrics") or {}).items():
                        if isinstance(value, int | float) and not isinstance(value, bool):
                            writer.add_scalar(f"sched/{key}", value, decisions)
                obs[i] = env.reset()[0]
        decisions += len(envs)
        bar.update(len(envs))
        net.train()
        while buffer.episodes and updates < decisions // cfg.decisions_per_update:
            terms = losses(net, buffer.sample(cfg.batch_size, cfg.unroll_steps), cfg)
            optimizer.zero_grad()
            terms["total"].backward()
            th.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            optimizer.step()
            updates += 1
            if writer and updates % 50 == 0:
                for key, value in terms.items():
                    writer.add_scalar(f"loss/{key}", value.item(), decisions)
        if decisions >= next_eval or decisions >= cfg.steps:
            next_eval += cfg.eval_every
            if validator:
                validate()
            th.save(
                {
                    "state_dict": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "decisions": decisions,
                    "best": best,
                },
                out / "last.pt",
            )
    bar.close()
    if not buffer.episodes:
        warnings.warn(
            f"muzero: no self-play episode ended within {decisions} decisions, so nothing was "
            "learned (give --steps more than one episode's decisions per env)",
            stacklevel=2,
        )
    if not validator or not (out / "model.pt").exists():
        checkpoint("model.pt")
    summary = {
        "wall_s": time.perf_counter() - start,
        "decisions": decisions,
        "updates": updates,
        "validation": validator.history if validator else [],
        "baseline": {"policy": heuristic, **(validator.baseline if validator else {})},
    }
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    if writer:
        writer.close()
    return net
