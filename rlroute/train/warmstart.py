"""Behaviour-cloning warm start of PPO from the supervised full-information router (``agent.warm_start``).

**Why.** From scratch, PPO did not find what the learned non-RL routers find: in the scenario study
(``experiments/scenarios/``, commit d6fdcf7) 14 of 15 PPO runs were still improving at 61k decisions and
lost to the threshold router on the provisioned fleet, where the supervised router and LinUCB beat it. The
supervised router regresses every action's *own* reward (horizon-0 simulator forks), so it is myopic: it
cannot see the queueing a large request causes for later ones, which PPO's discounted return does. The
warm start gives PPO the teacher's policy as its starting point and lets the RL objective improve on it
(Kickstarting, Schmitt et al. 2018; the BC pre-training of AlphaStar, Vinyals et al. 2019).

**Steps** (all on the ``train`` split; validation and test are never touched here):

1. *Teacher*: :func:`rlroute.policies.supervised.train` with the settings of ``conf/policy/supervised.yaml``
   (its own DAgger labels from forks; ``teacher_train`` overrides some) and the run's seed -- or the model
   file ``teacher_path`` (the scenario study trains the supervised competitor once and warm-starts every
   PPO seed from that very model, so "PPO vs supervised" compares the student with its own teacher).
2. *States*: ``episodes`` train episodes rolled out by each policy of ``behaviour`` (``teacher`` = the
   teacher's own rule; the others are registry names), seeds ``STATE_SEED + k``. Each visited observation is
   labelled with the teacher's action. With a large-model budget (``cfg.budget.large_share``) the label rule
   is budgeted: the teacher's best large-using action only where its score (predicted best of large/hybrid
   minus small) is in the top ``large_share`` of the scores of all collected states, else small (the
   behaviour rules, the teacher included, act unbudgeted).
   That score threshold is the teacher's price of one large-model decision at the budget -- the Lagrange
   multiplier of the budget constraint -- so the trainer starts the budget's dual variable there
   (:class:`rlroute.train.budget.BudgetCallback`) instead of at ``budget.init``.
3. *Statistics*: the VecNormalize observation statistics (moments and range) are initialised from these
   states, so the actor is cloned on the observations it will see.
4. *Actor*: cross-entropy of the policy's action distribution against the labels, smoothed by ``smoothing``
   (mass on the other actions keeps PPO exploring), Adam, ``epochs`` passes of ``batch_size``.
5. *Critic*: :class:`FreezeActor` keeps the actor fixed for the first ``value_warmup`` PPO updates, so the
   critic learns the warm policy's values before any policy-gradient step uses its advantages.

The validation callback also evaluates the warm-started policy before the first PPO update, so the kept
snapshot is the cloned policy whenever PPO does not improve on it on validation (``metrics.json``'s
``best_step`` is 0 then: the study reports it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rlroute.train.budget import budget_share
from rlroute.types import Action

STATE_SEED = 30_000  # state-collection episodes use train seeds STATE_SEED + k (away from the teacher's and eval's)
LARGE_USING = (int(Action.LARGE), int(Action.HYBRID))


@dataclass
class WarmStart:
    """``agent.warm_start`` (see the module docstring). ``teacher: null`` turns the warm start off."""

    teacher: str | None = None
    behaviour: list[str] = field(default_factory=lambda: ["teacher", "heuristic", "cache_aware", "all_small",
                                                          "all_large"])
    episodes: int = 1
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    smoothing: float = 0.05
    value_warmup: int = 1
    teacher_train: dict[str, Any] = field(default_factory=dict)
    teacher_path: str | None = None

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> WarmStart:
        """Parse ``agent.warm_start``; an unknown key or a bad value fails here, named."""
        raw = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown agent.warm_start key(s) {unknown}; expected some of {sorted(known)}")
        conv = {"behaviour": list, "teacher_train": dict}
        ws = cls(**{k: (conv[k](v) if k in conv else v) for k, v in raw.items()})
        if ws.teacher not in (None, "supervised"):
            raise ValueError(f"agent.warm_start.teacher must be null or 'supervised', got {ws.teacher!r}")
        if ws.episodes < 1 or ws.epochs < 1 or ws.batch_size < 1 or not ws.behaviour:
            raise ValueError("agent.warm_start: episodes, epochs, batch_size must be >= 1 and behaviour non-empty")
        if not 0.0 <= float(ws.smoothing) < 1.0 or float(ws.lr) <= 0 or int(ws.value_warmup) < 0:
            raise ValueError("agent.warm_start: smoothing must be in [0, 1), lr > 0, value_warmup >= 0")
        return ws

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


class Teacher:
    """The label rule: the supervised router's best action, budgeted when ``threshold`` is set (module
    docstring, step 2). ``act`` makes it a behaviour policy for the state collection."""

    name = "teacher"

    def __init__(self, router: Any) -> None:
        self.router = router
        self.threshold: float | None = None

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def label(self, ctx: Any) -> int:
        if self.threshold is not None and self.router.score(ctx) < self.threshold:
            return int(Action.SMALL)
        return int(self.router.act(ctx))

    act = label


def collect_states(cfg: Any, teacher: Teacher, ws: WarmStart, budget_share: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Roll out ``ws.behaviour`` on the train split; the visited observations and the teacher's labels."""
    from rlroute.env import build_env
    from rlroute.policies.registry import make_policy

    env = build_env(cfg, split="train")
    obs: list[np.ndarray] = []
    ctxs: list[Any] = []
    seed = STATE_SEED
    for name in ws.behaviour:
        policy = teacher if name == "teacher" else make_policy(name)
        for _ in range(ws.episodes):
            env.reset(seed=seed)
            policy.reset(np.random.default_rng(seed))
            seed += 1
            done = False
            while not done:
                ctx = env.decision_context()
                obs.append(np.asarray(ctx.obs, dtype=np.float32))
                ctxs.append(ctx)
                _, _, term, trunc, _ = env.step(int(policy.act(ctx)))
                done = bool(term or trunc)
    env.close()
    if budget_share is not None:
        # The budget's score quantile over every collected state: exactly `large_share` of the labels use
        # the large model (the first rule's states alone left the clone 25-30 % large on validation).
        scores = np.array([teacher.router.score(c) for c in ctxs])
        teacher.threshold = float(np.quantile(scores, 1.0 - budget_share))
    labels = np.array([teacher.label(c) for c in ctxs], dtype=np.int64)
    return np.stack(obs), labels


def clone(model: Any, obs: np.ndarray, labels: np.ndarray, ws: WarmStart, seed: int) -> dict[str, float]:
    """Fit ``model``'s actor to ``labels`` on the normalised ``obs`` (statistics set from ``obs`` first)."""
    import torch

    venv = model.get_vec_normalize_env()
    if venv is not None:
        venv.obs_rms.update(obs.astype(np.float64))
        x_np = venv.normalize_obs(obs)
    else:
        x_np = obs
    policy = model.policy
    params = actor_parameters(policy)
    opt = torch.optim.Adam(params, lr=float(ws.lr))
    x = torch.as_tensor(x_np, dtype=torch.float32, device=policy.device)
    y = torch.as_tensor(labels, device=policy.device)
    n_act = int(policy.action_space.n)
    target = torch.full((len(y), n_act), float(ws.smoothing) / (n_act - 1), device=policy.device)
    target[torch.arange(len(y)), y] = 1.0 - float(ws.smoothing)
    gen = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    for _ in range(int(ws.epochs)):
        for idx in torch.randperm(len(y), generator=gen).split(int(ws.batch_size)):
            logits = policy.get_distribution(x[idx]).distribution.logits
            loss = -(target[idx] * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        pred = policy.get_distribution(x).distribution.logits.argmax(-1)
    agree = float((pred == y).float().mean())
    share = float(np.isin(labels, LARGE_USING).mean())
    return {"warm_start/states": float(len(y)), "warm_start/agreement": agree,
            "warm_start/label_large_share": share, "warm_start/final_loss": float(loss.detach())}


def actor_parameters(policy: Any) -> list[Any]:
    """The parameters only the action distribution depends on (SB3's separate ``pi`` network + head)."""
    return [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]


class FreezeActor(BaseCallback):
    """Keeps the actor fixed (no gradient) for the first ``updates`` PPO updates (step 5): those updates
    train the critic only, on rollouts of the warm-started policy."""

    def __init__(self, updates: int) -> None:
        super().__init__()
        self.updates = int(updates)
        self.rollouts = 0
        self.frozen = False

    def _set(self, frozen: bool) -> None:
        for p in actor_parameters(self.model.policy):
            p.requires_grad_(not frozen)
        self.frozen = frozen

    def _on_training_start(self) -> None:
        self._set(self.updates > 0)

    def _on_rollout_start(self) -> None:
        # Called before collecting rollout k, i.e. after k updates.
        if self.frozen and self.rollouts >= self.updates:
            self._set(False)
        self.rollouts += 1

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("warm_start/actor_frozen", float(self.frozen))


def warm_start(model: Any, cfg: Any, ws: WarmStart) -> dict[str, float]:
    """Train the teacher, collect and label states, clone the actor into ``model`` (steps 1–4)."""
    from rlroute.policies.registry import make_policy, policy_config

    if ws.teacher_path is not None:
        router = make_policy(str(ws.teacher), model_path=str(ws.teacher_path))
    else:
        base = dict((policy_config(str(ws.teacher)) or {}).get("train") or {})  # conf/policy/supervised.yaml
        router = make_policy(str(ws.teacher), train={**base, **ws.teacher_train, "seed": int(cfg.seed)})
        router.prepare(cfg)
    share = budget_share(cfg)
    teacher = Teacher(router)
    obs, labels = collect_states(cfg, teacher, ws, share)
    out = clone(model, obs, labels, ws, int(cfg.seed))
    if teacher.threshold is not None:
        out["warm_start/budget_threshold"] = teacher.threshold
    return out
