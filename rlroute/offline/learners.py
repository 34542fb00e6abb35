"""Offline learners: behaviour cloning and discrete CQL (TorchRL), trained into an SB3 PPO actor.

Both learners train the *actor* of a freshly initialised SB3 ``PPO("MlpPolicy")`` — features extractor,
policy MLP, action head: the network ``rlroute train`` trains and ``rlroute export`` exports — on the
normalised logged observations. The run folder then holds an ordinary ``model.zip`` + ``vecnormalize.pkl`` and
goes through the one export path (ONNX + manifest + OOD guard), the evaluator and the router unchanged. The
exported graph's outputs are the actor's outputs: action logits for BC, Q-values for CQL; every consumer acts
by their argmax (``OnnxPolicy``, ``rlroute ope``), which is CQL's greedy policy. (Their softmax is not a
calibrated action distribution for CQL; nothing in serving uses it as one.)

* **BC** (``algo: bc``): cross-entropy of the actor's logits against the logged actions, by
  :func:`rlroute.train.warmstart.clone` (the PPO warm start's cloning step). It imitates the behaviour
  policy, exploration floor included (the floor's uniform actions only add label noise: the argmax stays the
  rule's action wherever the rule is deterministic).
* **CQL** (``algo: cql``): TorchRL's ``DiscreteCQLLoss`` (Kumar et al. 2020, discrete form): a TD loss towards
  ``r + gamma * max_a' Q_target(s', a')`` plus ``alpha * (logsumexp_a Q(s, a) - Q(s, a_logged))``, which keeps
  the Q-values of actions the log rarely took from being over-estimated. The Q-network is the SB3 actor itself.

**Why ``gamma = 0`` by default** (a contextual bandit). The reward a decision log observes is the request's
own (quality, its cost, its own e2e and SLO: :mod:`rlroute.offline.dataset`), and the request's own outcome is
what the action changes most directly; the effect of one decision on the queues later requests meet is not in
any record, and a log's next record is another client's request (arrival order), not a consequence of this one.
With ``gamma = 0`` CQL is a conservative per-action reward regression whose greedy policy maximises the expected
own reward — the quantity ``rlroute ope`` estimates and the PPO credit (``reward.credit: request``) pays. It
is blind to the load a decision adds (the same assumption the off-policy estimators make); ``gamma > 0`` is
allowed (``offline.gamma``) with the next record's observation as next state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rlroute.offline.dataset import N_ACTIONS, Dataset


@dataclass(slots=True)
class LearnerConfig:
    """``conf/offline/<algo>.yaml`` (every key documented there)."""

    name: str = "bc"
    algo: str = "bc"
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 20
    smoothing: float = 0.0
    alpha: float = 1.0
    gamma: float = 0.0
    tau: float = 0.005
    loss_function: str = "l2"

    @classmethod
    def from_cfg(cls, cfg: Any) -> LearnerConfig:
        """Parse ``offline``; an unknown key or a bad value fails here, named."""
        raw = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown offline key(s) {unknown}; expected some of {sorted(known)}")
        lc = cls(**raw)
        if lc.algo not in LEARNERS:
            raise ValueError(f"offline.algo: expected one of {sorted(LEARNERS)}, got {lc.algo!r}")
        if lc.lr <= 0 or lc.batch_size < 1 or lc.epochs < 1:
            raise ValueError("offline: lr must be > 0, batch_size and epochs >= 1")
        if not 0.0 <= lc.gamma < 1.0 or not 0.0 < lc.tau <= 1.0 or lc.alpha < 0 or not 0.0 <= lc.smoothing < 1.0:
            raise ValueError("offline: gamma must be in [0, 1), tau in (0, 1], alpha >= 0, smoothing in [0, 1)")
        return lc


def actor_net(policy: Any) -> nn.Module:
    """The SB3 actor as one module, raw (normalised) observation -> action outputs; parameters shared."""
    return nn.Sequential(policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net)


def behaviour_cloning(model: Any, x: np.ndarray, x_next: np.ndarray, data: Dataset, lc: LearnerConfig, seed: int
                      ) -> dict[str, float]:
    """Fit ``model``'s actor to the logged actions on normalised observations ``x`` (``x_next`` unused)."""
    from rlroute.train.warmstart import WarmStart, clone

    torch.manual_seed(seed)
    ws = WarmStart(epochs=lc.epochs, batch_size=lc.batch_size, lr=lc.lr, smoothing=lc.smoothing)
    out = clone(model, x, data.action, ws, seed)
    return {"train/agreement": out["warm_start/agreement"], "train/final_loss": out["warm_start/final_loss"]}


def cql(model: Any, x: np.ndarray, x_next: np.ndarray, data: Dataset, lc: LearnerConfig, seed: int
        ) -> dict[str, float]:
    """Discrete CQL (TorchRL) with the actor as Q-network, ``lc.epochs`` passes of ``lc.batch_size``."""
    try:
        from tensordict import TensorDict
        from torchrl.data import Categorical
        from torchrl.modules import QValueActor
        from torchrl.objectives import DiscreteCQLLoss, SoftUpdate, ValueEstimators
    except ImportError as e:  # the optional extra
        raise ImportError("offline.algo=cql needs TorchRL: pip install 'rlroute[offline]' (torchrl==0.14.1)") from e

    torch.manual_seed(seed)
    policy = model.policy
    net = actor_net(policy)
    spec = Categorical(N_ACTIONS)
    loss = DiscreteCQLLoss(QValueActor(net, in_keys=["observation"], spec=spec), action_space=spec,
                           loss_function=lc.loss_function, delay_value=True)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=lc.gamma)
    target = SoftUpdate(loss, tau=lc.tau)
    opt = torch.optim.Adam(net.parameters(), lr=lc.lr)
    n = len(data)
    td = TensorDict({"observation": torch.as_tensor(x), "action": torch.as_tensor(data.action),
                     ("next", "observation"): torch.as_tensor(x_next),
                     ("next", "reward"): torch.as_tensor(data.reward).unsqueeze(-1),
                     ("next", "done"): torch.as_tensor(data.done | (lc.gamma == 0)).unsqueeze(-1),
                     ("next", "terminated"): torch.as_tensor(data.done | (lc.gamma == 0)).unsqueeze(-1)},
                    batch_size=[n])
    gen = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    last: dict[str, float] = {}
    for _ in range(lc.epochs):
        for idx in torch.randperm(n, generator=gen).split(lc.batch_size):
            out = loss(td[idx])
            total = out["loss_qvalue"] + lc.alpha * out["loss_cql"]
            opt.zero_grad()
            total.backward()
            opt.step()
            target.step()
            last = {"train/loss_qvalue": float(out["loss_qvalue"].detach()),
                    "train/loss_cql": float(out["loss_cql"].detach())}
    policy.set_training_mode(False)
    with torch.no_grad():
        q = net(torch.as_tensor(x))
    last["train/agreement"] = float((q.argmax(-1).numpy() == data.action).mean())
    return last


LEARNERS = {"bc": behaviour_cloning, "cql": cql}


def fit(model: Any, x: np.ndarray, x_next: np.ndarray, data: Dataset, lc: LearnerConfig, seed: int
        ) -> dict[str, float]:
    """Train ``model``'s actor with ``lc.algo``; training metrics (``train/agreement``: share of logged actions
    the trained policy's argmax repeats)."""
    return LEARNERS[lc.algo](model, x, x_next, data, lc, seed)
