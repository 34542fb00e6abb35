"""``rlroute sim [overrides]``: run a workload through the simulator with any policy of the registry.

Composes ``conf/sim.yaml`` (the root config's groups plus ``sim_policy``, ``max_requests``, ``drain``,
``out``), instantiates ``cfg.workload``, ``cfg.cluster`` (and ``cfg.quality`` when ``use_quality``) and the
policy named by ``sim_policy`` (:data:`rlroute.policies.registry.POLICIES`, ``conf/policy/<name>.yaml``),
which decides on the same context as in the env (request, state, prefix matches, features, action mask),
runs, prints rich tables and writes a JSON summary (with the resolved config and seed). References that
read the env (``reward_oracle``, ``lookahead``) need ``rlroute eval``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rlroute.cluster.base import Hybrid, action_mask
from rlroute.cluster.sim.cluster import SimCluster
from rlroute.cluster.sim.metrics import render, summarize
from rlroute.cluster.sim.run import run
from rlroute.features import FeatureExtractor
from rlroute.paths import CONF_DIR
from rlroute.policies.base import DecisionContext, Policy
from rlroute.policies.registry import POLICIES, make_policy
from rlroute.scaling.sim import attach
from rlroute.seeding import seed_everything


def simulate(cfg: DictConfig) -> dict[str, Any]:
    """Run one simulation from a composed config; return the summary (also written to ``cfg.out``)."""
    rng = seed_everything(int(cfg.seed))
    workload = instantiate(cfg.workload)
    quality = None
    if cfg.get("use_quality", True) and cfg.get("quality") is not None:
        quality = instantiate(cfg.quality)
    cluster: SimCluster = instantiate(cfg.cluster, rng=rng)
    hybrid = getattr(quality, "hybrid", None)  # a quality model may make no hybrid assumption
    if cfg.cluster.get("hybrid") is None and hybrid is not None:
        # plan length / cascade mode are the quality config's assumptions unless the cluster pins them
        cluster.hybrid = Hybrid.of(hybrid, cluster.hybrid)
    autoscaler = attach(cluster, cfg.get("scaler"))
    name = str(cfg.sim_policy)
    if name not in POLICIES:
        raise ValueError(f"sim_policy must be one of the policy registry's names ({', '.join(sorted(POLICIES))}), "
                         f"got {name!r}")
    policy = make_policy(name)
    policy.prepare(cfg)
    policy.reset(rng)
    text = cfg.features.text if cfg.get("features") is not None else "hash"
    n = cfg.get("max_requests")
    requests = itertools.islice(workload.requests(rng), int(n) if n is not None else None)
    t0 = time.perf_counter()
    comps = run(cluster, requests, deciding(policy, cluster, str(text)), quality, rng,
                drain=bool(cfg.get("drain", True)))
    wall = time.perf_counter() - t0
    summary = summarize(comps, cluster)
    summary["run"] = {"sim_policy": str(cfg.sim_policy), "seed": int(cfg.seed), "wall_s": wall,
                      "requests_per_wall_s_incl_workload": len(comps) / wall if wall > 0 else None,
                      "workload": str(cfg.workload.get("name", "")), "hybrid_mode": cluster.hybrid.mode,
                      "plan_tokens": cluster.hybrid.plan_tokens}
    if autoscaler is not None:
        summary["scaling"] = autoscaler.summary()
    summary["config"] = OmegaConf.to_container(cfg, resolve=False)
    out = cfg.get("out")
    if out is None:
        try:
            out = str(Path(HydraConfig.get().runtime.output_dir) / "sim.json")
        except ValueError:  # not under @hydra.main (tests call simulate directly)
            out = "sim.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["written_to"] = out
    return summary


def deciding(policy: Policy, cluster: SimCluster, text: str = "hash") -> Callable[[Any], int]:
    """``request -> action`` of ``policy`` deciding on what the env would show it at that arrival: the
    cluster's state and prefix matches, the features computed from them and the action mask."""
    extractor = FeatureExtractor(text)
    mask = np.ones(3, dtype=bool)

    def act(req: Any) -> int:
        state = cluster.state()
        matches = cluster.prefix_match(req)
        obs = extractor.extract(req, state, matches)
        return int(policy.act(DecisionContext(req, state, matches, obs, action_mask(state, mask).copy())))

    return act


@hydra.main(config_path=str(CONF_DIR), config_name="sim", version_base=None)
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``rlroute sim``."""
    summary = simulate(cfg)
    render(summary, title=f"rlroute sim: {summary['run']['workload']} x {summary['run']['sim_policy']}")
    print(f"summary written to {summary['written_to']}")
