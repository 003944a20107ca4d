"""Gumbel MuZero search over a batch of roots, in numpy, every network call batched.

Danihelka, Guez, Schrittwieser and Silver, "Policy improvement by planning with Gumbel" (ICLR
2022), as DeepMind's mctx implements it (``mctx/_src/policies.py: gumbel_muzero_policy``,
``seq_halving.py``, ``qtransforms.py: qtransform_completed_by_mix_value``); read, not imported.

One call of `gumbel_search` plans one decision for each of ``B`` roots in lockstep:

* **root**: Gumbel-top-k. Each legal action gets ``g(a) ~ Gumbel(0, gumbel_scale)``; the
  ``m = min(max_considered, n_legal)`` actions with the largest ``g + logits`` are considered, and
  sequential halving spends the ``n`` simulations on them in mctx's visit schedule
  (`considered_visit_sequence`): each round visits every survivor equally, then keeps the better
  half by ``g + logits + sigma(completed Q)``.
* **interior**: the paper's deterministic selection, ``argmax_a pi'(a) - N(a) / (1 + sum_b N(b))``
  with ``pi' = softmax(logits + sigma(completed Q))``, over the node's legal actions.
* **completed Q** (`completed_q`): visited actions keep their Q; unvisited ones get the mixed value
  ``v_mix = (v + sum_b N(b) * sum_{visited} pi(a) q(a) / sum_{visited} pi(a)) / (1 + sum_b N(b))``;
  then min-max normalised over the legal actions and scaled
  ``sigma(q) = (c_visit + max_b N(b)) * c_scale * q`` (c_visit = 50, c_scale = 0.1 as in mctx).
* **result**: the chosen action (the considered action with the most visits and the largest
  ``g + logits + sigma``), the improved policy ``softmax(logits + sigma(completed Q))`` (the
  training target) and the root value (the mean of the root's backed-up values, its own
  prediction included).

The tree lives in ``(B, nodes, actions)`` arrays; simulations walk all roots together, so a
simulation is one ``model.step`` call for the whole batch. Models implement `Model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

# a score below every real one and above -inf, as mctx's score_considered clips at -1e9
LOW_SCORE = -1e9


class Model(Protocol):
    """What search plans with: opaque handles for states, batched predictions.

    Arrays: ``logits`` ``(B, A)`` float (illegal entries are masked here, the model need not),
    ``values`` and ``rewards`` ``(B,)`` float, ``masks`` ``(B, A)`` bool, ``terminal`` ``(B,)``
    bool. A terminal state's value must be 0."""

    def root(self, envs: list[Any], obs: list[dict[str, np.ndarray]]) -> tuple:
        """``(handles, logits, values, masks)`` for the envs' current states."""

    def step(self, handles: list[Any], actions: np.ndarray) -> tuple:
        """``(handles, rewards, logits, values, masks, terminal)`` after ``actions``; ``logits``
        may be ``None``: the search then asks `logits` for a node's once it needs them."""

    def logits(self, handles: list[Any]) -> np.ndarray:
        """``(n, A)`` logits of non-terminal nodes whose `step` returned ``None`` for them."""

    def finish(self) -> None:
        """Called once the simulations are done: leave the envs as `root` found them."""


@dataclass(frozen=True)
class SearchConfig:
    """``simulations`` per decision, ``max_considered`` root actions, mctx's ``c_visit``
    (``maxvisit_init``) and ``c_scale`` (``value_scale``), the Gumbel noise's scale (0: act
    deterministically) and the discount."""

    simulations: int = 16
    max_considered: int = 16
    c_visit: float = 50.0
    c_scale: float = 0.1
    gumbel_scale: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.simulations < 1:
            raise ValueError(f"simulations must be >= 1, got {self.simulations}")
        if self.max_considered < 1:
            raise ValueError(f"max_considered must be >= 1, got {self.max_considered}")


@dataclass
class SearchResult:
    """``action`` ``(B,)`` int, ``policy`` ``(B, A)`` improved policy (0 on illegal actions),
    ``value`` ``(B,)`` root value, ``visits`` ``(B, A)`` root visit counts."""

    action: np.ndarray
    policy: np.ndarray
    value: np.ndarray
    visits: np.ndarray


@lru_cache(maxsize=256)
def considered_visit_sequence(max_considered: int, simulations: int) -> tuple[int, ...]:
    """mctx's ``get_sequence_of_considered_visits``: before simulation ``s`` the root visits an
    action whose visit count equals entry ``s``; every round gives each of the ``k`` survivors
    ``max(1, floor(n / (ceil(log2 m) * k)))`` more visits, then ``k`` halves (at least 2)."""
    if max_considered <= 1:
        return tuple(range(simulations))
    log2max = int(math.ceil(math.log2(max_considered)))
    sequence: list[int] = []
    visits = [0] * max_considered
    considered = max_considered
    while len(sequence) < simulations:
        extra = max(1, int(simulations / (log2max * considered)))
        for _ in range(extra):
            sequence.extend(visits[:considered])
            for i in range(considered):
                visits[i] += 1
        considered = max(2, considered // 2)
    return tuple(sequence[:simulations])


def masked_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis restricted to ``mask`` (0 elsewhere); rows need a True."""
    z = np.where(mask, logits, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def completed_q(
    q: np.ndarray,
    visits: np.ndarray,
    raw_value: np.ndarray,
    logits: np.ndarray,
    mask: np.ndarray,
    c_visit: float,
    c_scale: float,
) -> np.ndarray:
    """``sigma(completed Q)`` ``(R, A)`` of ``R`` nodes: mctx's
    ``qtransform_completed_by_mix_value``, except that min and max run over the legal actions
    only (an illegal action is never chosen, so its completed value must not stretch the scale).

    ``q``, ``visits``, ``logits``, ``mask``: ``(R, A)``; ``raw_value``: ``(R,)``."""
    prior = np.maximum(masked_softmax(logits, mask), np.finfo(np.float64).tiny)
    visited = visits > 0
    n_sum = visits.sum(axis=-1)
    p_sum = np.where(visited, prior, 0.0).sum(axis=-1)
    weighted = np.where(visited, prior * q, 0.0).sum(axis=-1) / np.where(n_sum > 0, p_sum, 1.0)
    mixed = (raw_value + n_sum * weighted) / (n_sum + 1)
    done = np.where(visited, q, mixed[:, None])
    lo = np.where(mask, done, np.inf).min(axis=-1, keepdims=True)
    hi = np.where(mask, done, -np.inf).max(axis=-1, keepdims=True)
    normed = (done - lo) / np.maximum(hi - lo, 1e-8)
    return (c_visit + visits.max(axis=-1, keepdims=True)) * c_scale * np.where(mask, normed, 0.0)


class Tree:
    """``B`` search trees of at most ``nodes`` nodes over ``A`` actions, as arrays; node 0 is
    the root. ``child`` is -1 where an edge is unexpanded."""

    def __init__(self, batch: int, nodes: int, actions: int):
        self.visits = np.zeros((batch, nodes), np.int64)
        self.value = np.zeros((batch, nodes))
        self.raw_value = np.zeros((batch, nodes))
        self.terminal = np.zeros((batch, nodes), bool)
        self.pending = np.zeros((batch, nodes), bool)  # logits not evaluated yet
        self.parent = np.full((batch, nodes), -1, np.int64)
        self.action_from_parent = np.full((batch, nodes), -1, np.int64)
        self.logits = np.zeros((batch, nodes, actions))
        self.mask = np.zeros((batch, nodes, actions), bool)
        self.child = np.full((batch, nodes, actions), -1, np.int64)
        self.child_reward = np.zeros((batch, nodes, actions))
        self.child_visits = np.zeros((batch, nodes, actions), np.int64)
        self.child_value = np.zeros((batch, nodes, actions))
        self.handles: list[list[Any]] = [[None] * nodes for _ in range(batch)]

    def set_node(self, rows, index, handles, logits, values, masks, terminal) -> None:
        if logits is None:
            self.pending[rows, index] = ~np.asarray(terminal, bool)
        else:
            self.logits[rows, index] = logits
        self.mask[rows, index] = masks
        self.raw_value[rows, index] = values
        self.value[rows, index] = values
        self.visits[rows, index] = 1
        self.terminal[rows, index] = terminal
        for r, i, h in zip(
            np.atleast_1d(rows), np.broadcast_to(index, len(handles)), handles, strict=True
        ):
            self.handles[r][i] = h

    def sigma(self, rows: np.ndarray, nodes: np.ndarray, cfg: SearchConfig) -> np.ndarray:
        """``sigma(completed Q)`` at ``(rows, nodes)``."""
        q = self.child_reward[rows, nodes] + cfg.gamma * self.child_value[rows, nodes]
        return completed_q(
            q,
            self.child_visits[rows, nodes],
            self.raw_value[rows, nodes],
            self.logits[rows, nodes],
            self.mask[rows, nodes],
            cfg.c_visit,
            cfg.c_scale,
        )


def root_scores(tree: Tree, gumbel: np.ndarray, considered_visit: np.ndarray, cfg: SearchConfig):
    """mctx's ``score_considered`` at the roots: ``g + logits + sigma`` for the legal actions
    whose visit count equals ``considered_visit`` ``(B,)``, -inf for the others."""
    rows = np.arange(gumbel.shape[0])
    roots = np.zeros_like(rows)
    logits = tree.logits[:, 0] - np.where(tree.mask[:, 0], tree.logits[:, 0], -np.inf).max(
        axis=-1, keepdims=True
    )
    score = np.maximum(LOW_SCORE, gumbel + logits + tree.sigma(rows, roots, cfg))
    keep = tree.mask[:, 0] & (tree.child_visits[:, 0] == considered_visit[:, None])
    return np.where(keep, score, -np.inf)


def interior_action(tree: Tree, rows: np.ndarray, nodes: np.ndarray, cfg: SearchConfig):
    """The paper's deterministic non-root selection (mctx's
    ``gumbel_muzero_interior_action_selection``) at ``(rows, nodes)``."""
    mask = tree.mask[rows, nodes]
    improved = masked_softmax(tree.logits[rows, nodes] + tree.sigma(rows, nodes, cfg), mask)
    visits = tree.child_visits[rows, nodes]
    score = improved - visits / (1 + visits.sum(axis=-1, keepdims=True))
    return np.where(mask, score, -np.inf).argmax(axis=-1)


def backup(tree: Tree, rows: np.ndarray, leaves: np.ndarray, values: np.ndarray, gamma: float):
    """mctx's ``backward``: walk each leaf's path to the root, updating running means."""
    index, value = leaves.copy(), values.astype(float).copy()
    active = tree.parent[rows, index] >= 0
    while active.any():
        r, i = rows[active], index[active]
        p, a = tree.parent[r, i], tree.action_from_parent[r, i]
        value[active] = tree.child_reward[r, p, a] + gamma * value[active]
        count = tree.visits[r, p]
        tree.value[r, p] = (tree.value[r, p] * count + value[active]) / (count + 1)
        tree.visits[r, p] = count + 1
        tree.child_value[r, p, a] = tree.value[r, i]
        tree.child_visits[r, p, a] += 1
        index[active] = p
        active[active] = p > 0


def gumbel_search(
    model: Model,
    envs: list[Any],
    obs: list[dict[str, np.ndarray]],
    cfg: SearchConfig,
    rng: np.random.Generator,
) -> SearchResult:
    """Plan one decision for each env (see the module docstring); ``rng`` draws the Gumbel
    noise (none when ``cfg.gumbel_scale`` is 0). Raises ``ValueError`` if a root has no legal
    action."""
    handles, logits, values, masks = model.root(envs, obs)
    masks = np.asarray(masks, bool)
    batch, n_actions = masks.shape
    if not masks.any(axis=1).all():
        raise ValueError("gumbel_search: a root has no legal action")
    n = cfg.simulations
    tree = Tree(batch, n + 1, n_actions)
    rows = np.arange(batch)
    tree.set_node(rows, 0, handles, logits, values, masks, np.zeros(batch, bool))
    gumbel = np.zeros((batch, n_actions))
    if cfg.gumbel_scale > 0:
        gumbel = cfg.gumbel_scale * rng.gumbel(size=(batch, n_actions))
    considered = np.minimum(cfg.max_considered, masks.sum(axis=1))
    schedule = np.array([considered_visit_sequence(int(m), n) for m in considered])
    try:
        for sim in range(n):
            # selection: the root by sequential halving, below it deterministically
            node = np.zeros(batch, np.int64)
            action = root_scores(tree, gumbel, schedule[:, sim], cfg).argmax(axis=1)
            child = tree.child[rows, node, action]
            descend = (child >= 0) & ~tree.terminal[rows, np.maximum(child, 0)]
            while descend.any():
                node[descend] = child[descend]
                evaluate = descend & tree.pending[rows, node]
                if evaluate.any():
                    r, i = rows[evaluate], node[evaluate]
                    tree.logits[r, i] = model.logits(
                        [tree.handles[b][j] for b, j in zip(r, i, strict=True)]
                    )
                    tree.pending[r, i] = False
                action[descend] = interior_action(tree, rows[descend], node[descend], cfg)
                child = tree.child[rows, node, action]
                descend = (child >= 0) & ~tree.terminal[rows, np.maximum(child, 0)]
            # a terminal child is a leaf worth 0 again; every other path expands a new node
            leaves = np.where(child >= 0, child, sim + 1)
            leaf_values = np.zeros(batch)
            new = child < 0
            if new.any():
                r = rows[new]
                parents = [tree.handles[b][i] for b, i in zip(r, node[new], strict=True)]
                h, rew, lg, val, msk, term = model.step(parents, action[new])
                val = np.where(term, 0.0, val)
                tree.set_node(r, sim + 1, h, lg, val, msk, term)
                tree.parent[r, sim + 1] = node[new]
                tree.action_from_parent[r, sim + 1] = action[new]
                tree.child[r, node[new], action[new]] = sim + 1
                tree.child_reward[r, node[new], action[new]] = rew
                leaf_values[new] = val
            old = ~new
            tree.visits[rows[old], leaves[old]] += 1
            backup(tree, rows, leaves, leaf_values, cfg.gamma)
    finally:
        model.finish()
    # the decision: among the most visited considered actions, the best g + logits + sigma
    root_visits = tree.child_visits[:, 0]
    action = root_scores(tree, gumbel, root_visits.max(axis=1), cfg).argmax(axis=1)
    sigma = tree.sigma(rows, np.zeros(batch, np.int64), cfg)
    policy = masked_softmax(tree.logits[:, 0] + sigma, masks)
    return SearchResult(action, policy, tree.value[:, 0].copy(), root_visits.copy())
