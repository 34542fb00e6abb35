"""``supervised``: the full-information router, a regressor of every action's own reward on the 224 features.

**Labels.** At each visited decision, every allowed action is scored by a simulator fork
(:class:`rlroute.policies.whatif.WhatIf`, horizon 0): latency, SLO and billed cost from the fork, quality
from the quality model — by default its success probability ``p`` (``label_quality: p``). ``p`` is the
conditional expectation of the realised outcome ``ok`` given the request, so regressing on it has the same
target as regressing on ``ok`` with less noise; ``label_quality: ok`` uses the realised outcome.

**States (DAgger-style).** Iteration 0 labels the states visited by the hand-written rules
(``behaviour``: the seed heuristic, cache-aware, all-small, all-large by default; one episode each per
round); each later iteration rolls out the current model, labels the states *it* visits, aggregates
them with the earlier ones and refits (Ross et al. 2011). Everything comes from the workload's **train**
split, and a train decision whose prompt text also occurs in a held-out split (val, test, test_xdomain:
``PromptWorkload.prompt_texts``) is not used — the synthetic workload's splits do share some prompts (the
same system prompt with the same templated first question; 62 of 859 test prompts in 5 test episodes of
256 decisions). The model file records the train prompts' hashes and how many decisions were dropped.

**Model.** A small torch MLP ``225 → hidden → hidden → 3`` (features + bias), trained with MSE on the
allowed actions' labels. The policy picks the allowed action with the best predicted reward (ties:
cheaper first). Saved with ``torch.save`` as a dict (weights, sizes, the feature-schema hash, the
training settings and prompt hashes), loaded by ``conf/policy/supervised.yaml``'s ``model_path``.

Train: ``python -m rlroute.policies.supervised --out runs/supervised.pt [--iterations 3 ...] [overrides]``
(a rich progress bar per iteration). With ``model_path: null`` the evaluator's ``prepare(cfg)`` trains one
with the config's settings (on train only) before evaluating.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.common import COST_ORDER, allowed_actions
from rlroute.policies.whatif import WhatIf
from rlroute.types import Action, Request

HELDOUT_SPLITS = ("val", "test", "test_xdomain")
TRAIN_SEED = 20_000  # training episodes use seeds TRAIN_SEED + k (train split; away from evaluation seeds)


@dataclass
class TrainSettings:
    """How the supervised router is trained (see the module docstring)."""

    iterations: int = 3
    episodes: int = 1
    episode_length: int | None = None  # decisions per labelled episode; None = the env's (the scenario's)
    label_every: int = 4  # label every k-th visited decision (forks dominate the cost; neighbours are alike)
    behaviour: list[str] = field(default_factory=lambda: ["heuristic", "cache_aware", "all_small", "all_large"])
    label_quality: str = "p"
    hidden: int = 64
    epochs: int = 300
    lr: float = 3e-3
    seed: int = 0


class RewardNet(nn.Module):
    """``[obs, 1] → predicted own reward of each action``."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


@dataclass
class Dataset:
    """Labelled decisions: features, allowed mask, per-action labels (NaN where not allowed), prompt keys."""

    x: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    prompts: set[str] = field(default_factory=set)
    excluded: int = 0

    def __len__(self) -> int:
        return len(self.x)


def prompt_key(req: Request) -> str | None:
    """A stable hash of the request's prompt text (``None`` for trace requests without text)."""
    return hashlib.sha1(req.prompt.encode()).hexdigest() if req.prompt is not None else None


def _features(obs: np.ndarray) -> np.ndarray:
    return np.append(np.asarray(obs, dtype=np.float32), np.float32(1.0))


class SupervisedRouter(Policy):
    """Pick the allowed action with the best predicted own reward.

    Args:
        model_path: a file written by :func:`train` (``None``: train in :meth:`prepare`).
        train: :class:`TrainSettings` fields for training in :meth:`prepare` when there is no model file.
    """

    name = "supervised"

    def __init__(self, model_path: str | None = None, train: dict[str, Any] | None = None) -> None:
        self.settings = TrainSettings(**(train or {}))
        self.net: RewardNet | None = None
        self.meta: dict[str, Any] = {}
        if model_path is not None:
            self.load(Path(model_path))

    def load(self, path: Path) -> None:
        """Load a model file (see :func:`save`)."""
        if not path.is_file():
            raise FileNotFoundError(f"supervised.model_path: no model file at {path} (train one with "
                                    "`python -m rlroute.policies.supervised --out PATH`)")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        check_schema(blob.get("schema_hash"), path)
        self.net = RewardNet(int(blob["n_in"]), int(blob["hidden"]))
        self.net.load_state_dict(blob["state_dict"])
        self.net.eval()
        self.meta = {k: v for k, v in blob.items() if k != "state_dict"}

    def prepare(self, cfg: Any) -> None:
        """Train on ``cfg``'s train split when no model was loaded."""
        if self.net is None:
            self.net, self.meta = train(cfg, self.settings)

    def reset(self, rng: np.random.Generator) -> None:
        """Stateless."""

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Predicted own reward of each action."""
        if self.net is None:
            raise RuntimeError("supervised router has no model: pass model_path or call prepare(cfg) first")
        with torch.no_grad():
            return self.net(torch.from_numpy(_features(obs))[None]).numpy()[0]  # type: ignore[no-any-return]

    def score(self, ctx: DecisionContext) -> float:
        """Predicted advantage of the strong model: the better of large and hybrid minus small (the score
        RouteLLM's APGR sweep thresholds, ``rlroute/eval/metrics.py``)."""
        pred = self.predict(ctx.obs)
        return float(max(pred[Action.LARGE], pred[Action.HYBRID]) - pred[Action.SMALL])

    def act(self, ctx: DecisionContext) -> Action:
        """Best predicted allowed action (ties: cheaper first)."""
        pred = self.predict(ctx.obs)
        mask = allowed_actions(ctx)
        if not mask.any():
            mask = np.ones(3, dtype=bool)
        best = max(pred[a] for a in range(3) if mask[a])
        return next(a for a in COST_ORDER if mask[a] and pred[a] == best)


def heldout_prompts(cfg: Any, splits: tuple[str, ...] = HELDOUT_SPLITS) -> set[str]:
    """Prompt keys of every prompt the held-out ``splits`` of ``cfg.workload`` can produce (workloads with
    ``prompt_texts``; trace workloads have no text and are split by time window)."""
    from hydra.utils import instantiate

    out: set[str] = set()
    for split in splits:
        texts = getattr(instantiate(cfg.workload, split=split), "prompt_texts", None)
        if callable(texts):
            out.update(hashlib.sha1(t.encode()).hexdigest() for t in texts())
    return out


def collect(env: Any, policy: Policy, whatif: WhatIf, seed: int, data: Dataset,
            exclude: set[str] | frozenset[str] = frozenset(), every: int = 1) -> float:
    """One train-split episode driven by ``policy``; label every ``every``-th visited decision into
    ``data``, except those whose prompt key is in ``exclude`` (counted in ``data.excluded``)."""
    env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    whatif.bind(env)
    total, done, k = 0.0, False, 0
    while not done:
        ctx = env.decision_context()
        key = prompt_key(ctx.request)
        labelled, k = k % every == 0, k + 1
        if labelled and key is not None and key in exclude:
            data.excluded += 1
        elif labelled:
            data.x.append(_features(ctx.obs))
            data.y.append(whatif.rewards(ctx))
            if key is not None:
                data.prompts.add(key)
        _, r, term, trunc, _ = env.step(int(policy.act(ctx)))
        total += float(r)
        done = bool(term or trunc)
    return total


def fit(data: Dataset, s: TrainSettings) -> RewardNet:
    """MSE regression of the allowed actions' labels (full batch, Adam)."""
    torch.manual_seed(s.seed)
    x = torch.from_numpy(np.stack(data.x))
    y_np = np.stack(data.y).astype(np.float32)
    mask = torch.from_numpy(np.isfinite(y_np))
    y = torch.from_numpy(np.nan_to_num(y_np))
    net = RewardNet(x.shape[1], s.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    for _ in range(s.epochs):
        opt.zero_grad()
        loss = (((net(x) - y) ** 2) * mask).sum() / mask.sum()
        loss.backward()
        opt.step()
    net.eval()
    return net


def train(cfg: Any, s: TrainSettings | None = None, progress: bool = False) -> tuple[RewardNet, dict[str, Any]]:
    """DAgger-style training on ``cfg``'s train split (see the module docstring); the net and its metadata."""
    from rlroute.env import build_env
    from rlroute.policies.registry import make_policy

    s = s or TrainSettings()
    if s.iterations < 1 or s.episodes < 1 or s.label_every < 1:
        raise ValueError("supervised: iterations, episodes and label_every must be >= 1, got "
                         f"{s.iterations}, {s.episodes}, {s.label_every}")
    env = build_env(cfg, split="train")
    if s.episode_length is not None:
        # Whole episodes by default: a short one never reaches the congestion a scenario's load builds up,
        # and horizon-0 labels of uncongested states teach "large is always better" (provisioned fleet:
        # 256-decision episodes gave an all-large router, val reward 0.31 vs 0.76 for the threshold router).
        env.episode_length = s.episode_length
    whatif = WhatIf(s.label_quality)
    exclude = heldout_prompts(cfg)
    data = Dataset()
    returns: list[dict[str, Any]] = []
    router = SupervisedRouter()
    seed = TRAIN_SEED
    bar = _progress(progress)
    with bar:
        for it in range(s.iterations):
            behaviour = [make_policy(b) for b in s.behaviour] if it == 0 else [router]
            task = bar.add_task(f"iteration {it}: label states", total=len(behaviour) * s.episodes)
            for pol in behaviour:
                for _ in range(s.episodes):
                    ret = collect(env, pol, whatif, seed, data, exclude, s.label_every)
                    returns.append({"iteration": it, "policy": str(getattr(pol, "name", "")), "return": ret})
                    seed += 1
                    bar.advance(task)
            router.net = fit(data, s)
    env.close()
    meta = {"n_in": int(data.x[0].shape[0]), "hidden": s.hidden, "settings": asdict(s),
            "schema_hash": env.schema.hash, "n_samples": len(data), "excluded_heldout": data.excluded, "train_prompts": sorted(data.prompts),
            "rollout_returns": returns, "split": "train"}
    assert router.net is not None
    return router.net, meta


def check_schema(schema_hash: str | None, path: Path) -> None:
    """Refuse a model trained on other features (an older feature schema version): it would score
    observations whose indices mean something else."""
    from rlroute.features import build_schema
    from rlroute.features.encoders import TEXT_ENCODERS

    running = {build_schema(t).hash: t for t in TEXT_ENCODERS}
    if schema_hash not in running:
        raise ValueError(f"supervised.model_path: {path} was trained on feature schema hash {schema_hash}; the "
                         f"running features are {build_schema().version} with hash "
                         f"{' or '.join(f'{h} ({t})' for h, t in running.items())}: retrain it")


def save(net: RewardNet, meta: dict[str, Any], path: Path) -> None:
    """Write the model file read by :meth:`SupervisedRouter.load`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), **meta}, path)


def _progress(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled)


def main(argv: list[str] | None = None) -> int:
    """``python -m rlroute.policies.supervised --out PATH [options] [hydra overrides]``."""
    ap = argparse.ArgumentParser(prog="python -m rlroute.policies.supervised", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="model file to write (.pt)")
    defaults = TrainSettings()
    for name in ("iterations", "episodes", "episode_length", "label_every", "hidden", "epochs", "seed"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))  # None: env's
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--label-quality", choices=("p", "ok"), default=defaults.label_quality)
    ap.add_argument("--behaviour", nargs="+", default=defaults.behaviour, help="rules rolled out in iteration 0")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml (workload=..., cluster=...)")
    args = ap.parse_args(argv)
    from rlroute.env.build import default_config

    s = TrainSettings(args.iterations, args.episodes, args.episode_length, args.label_every, list(args.behaviour),
                      args.label_quality, args.hidden, args.epochs, args.lr, args.seed)
    net, meta = train(default_config(args.overrides), s, progress=True)
    meta["overrides"] = list(args.overrides)
    save(net, meta, Path(args.out))
    print(f"wrote {args.out}: {meta['n_samples']} labelled decisions, {len(meta['train_prompts'])} train prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
