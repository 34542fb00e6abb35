"""``RoutingEnv``: one routing decision per step over a cluster (simulated or live), Gymnasium API."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from typing import Any

import gymnasium as gym
import numpy as np

from rlroute.cluster.base import Cluster, ClusterState, Hybrid, action_mask, action_stages, warmup_stage
from rlroute.env.reward import RewardConfig
from rlroute.env.warmup import warm_up
from rlroute.features import FeatureExtractor
from rlroute.policies.base import DecisionContext
from rlroute.quality.base import QualityModel
from rlroute.types import ACTION_NAMES, Action, Completion, Credit, FloatArray, Request
from rlroute.workload.base import Window, Workload

_SEED_HIGH = 2**62


def _window(value: Any) -> Window | None:
    """``options["window"]`` as a :class:`Window`: a Window, an ``(index, count)`` pair, or None."""
    if value is None or isinstance(value, Window):
        return value
    try:
        index, count = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"reset options 'window': expected (index, count) or a Window, got {value!r}") from None
    return Window(index, count)


class CompletionList(list[Any]):
    """``info["completions"]`` / ``info["credits"]``: a plain list of the step's
    :class:`~rlroute.types.Completion` (or :class:`~rlroute.types.Credit`) records whose deep copy is itself.

    SB3's ``DummyVecEnv`` deep-copies every info dict at every step; copying the completion dataclasses
    was ~9 % of a profiled PPO training step (docs/performance.md). The env never touches the list or
    its records after returning them, so sharing them with the copy changes nothing it computes;
    consumers must treat them as read-only (as they are: records of finished requests).
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> CompletionList:
        return self


class RoutingEnv(gym.Env[FloatArray, np.int64]):
    """Route each arriving LLM request to the large pool, the small pool, or both (hybrid).

    ## Description

    A stream of requests (a workload: synthetic conversations, a labelled prompt set joined with trace
    timing, a replayed trace) arrives at a cluster of two pools of SGLang instances: ``large`` (strong,
    expensive, few instances) and ``small`` (weaker, cheap, many). Each step is one routing decision for
    the next arriving request; the cluster (by default the discrete-event simulator
    ``rlroute.cluster.sim.SimCluster``) is advanced to that request's arrival before the agent sees it.
    Inside a pool, the instance is chosen by the pool's in-pool policy (SGLang router's cache-aware rule
    by default), so the agent trades answer quality against cost, queueing and prefix-cache affinity.
    The env is a thin adapter: the cluster owns time, queues and caches; the workload owns requests;
    the quality model owns outcomes.

    ## Action Space

    ``Discrete(3)``: ``0`` large, ``1`` small, ``2`` hybrid (plan-and-execute: the large model writes a
    short plan, the small model answers — serially, or ``pipelined`` with the small pool warmed while the
    plan is written; or cascade, per the cluster/quality ``hybrid`` config: :class:`rlroute.cluster.base.Hybrid`).
    :meth:`action_masks` marks actions whose pools have no healthy, unpaused instance (hybrid needs both);
    a masked action is still submitted (the cluster queues it on a paused pool or fails it when no
    instance is healthy, which counts as an SLO violation) and ``info["action_valid"]`` is False.

    ## Observation Space

    ``Box(224,) float32`` with per-index bounds from :data:`rlroute.features.SCHEMA`: 128 request + 64
    system + 32 cache features, every one a fixed transform of a raw value into about [-1, 1]. The
    index-by-index table (index | feature | transform | min | max) is generated from the schema in the
    :mod:`rlroute.features` docstring and ``docs/features.md``.

    ## Rewards

    Each request has its own reward (:meth:`RewardConfig.request_reward`):
    ``w_q * quality - w_c * cost - w_l * e2e - w_slo * violated`` -- the chosen action's success
    probability (or drawn outcome; 0 when the request failed), its billed cost (USD), its own time in the
    system (seconds) and whether *it* missed the TTFT/TPOT SLO or failed. With ``reward.credit: request``
    (default) the reward of step ``t`` is the sum of the own rewards of the requests that completed during
    step ``t`` (between this decision and the next arrival); ``info["credits"]`` lists them as
    :class:`~rlroute.types.Credit` ``(request_id, step, reward)`` where ``step`` is the step of the request's decision.
    At truncation the cluster is drained and every request still in flight is paid in the final step, so
    an episode's return is exactly the sum of its requests' own rewards. Training moves each credit back
    to its decision step before computing returns (:mod:`rlroute.train.credit`); evaluation sums episode
    returns. With ``reward.credit: park`` (the v0 scheme, kept for ``experiments/scenarios/reward_credit.md``)
    a step pays its own decision's quality and decision-time cost minus the Park-style integral of
    requests in the system over the step and the SLO misses of the step's completions. Defaults and their
    rationale: ``conf/reward/default.yaml``.

    ## Starting State

    A fresh cluster (empty queues, cold caches) and a fresh workload stream, both seeded from
    ``self.np_random``; the first ``offset`` requests of the stream are skipped, ``offset`` uniform in
    ``[0, max_offset]``, so episodes start at different points of a trace. With ``warmup > 0`` half of the
    episodes start so (a router just started), and in the other half the next ``w`` requests of the stream,
    ``w`` uniform in ``[1, warmup]``, are routed by the seed heuristic
    (:class:`~rlroute.policies.heuristic.SeedHeuristic`, the router's fallback) before the first decision:
    they fill queues and caches as a long-running router's pools are filled, are not decisions, and their
    completions are neither paid nor reported. Why half cold: with ``w`` uniform in ``[0, warmup]`` alone
    the pools' caches are full in most episodes (``mmlu_mooncake`` on the colocated pools fills the small
    pool's KV within ~500 requests), and a freshly started router's first hundreds of decisions were rare
    enough in training that the OOD guard flagged 3.1 % of held-out validation observations (half-filled
    small-pool KV; ``experiments/vs_sglang_router/README.md``). The cluster is advanced to the first decision's arrival. ``reset(options={"window": (i, n)})`` (or a
    :class:`~rlroute.workload.base.Window`) replays window ``i`` of ``n`` disjoint windows of the split
    instead, from its start (no offset): the evaluation's "test seed i".

    ## Episode End

    * Termination: never (routing is a continuing task).
    * Truncation: after ``episode_length`` decisions, or earlier when the workload stream ends (the final
      observation is then the last request's, recomputed on the final state, and ``step`` raises until
      ``reset``).

    At truncation the cluster is drained (:meth:`drain`): requests still in flight finish, their
    completions are in the final step's ``info["completions"]`` and their rewards in its reward.

    ## Arguments

    ``gymnasium.make("rlroute/Routing-v1")`` builds everything from ``conf/config.yaml`` through the
    factory :func:`rlroute.env.build.make_routing_env`; pass ``overrides=["workload=...", ...]`` for Hydra
    overrides, and any argument below (an object, or a config it is built from) to replace the built one.
    The constructor itself takes built objects only:

    * ``workload``: a :class:`~rlroute.workload.base.Workload`.
    * ``quality``: a :class:`~rlroute.quality.base.QualityModel`.
    * ``cluster``: a function ``rng -> Cluster`` called at each reset (:func:`rlroute.env.build.cluster_factory`).
    * ``reward``: a :class:`RewardConfig`.
    * ``episode_length``: decisions per episode (config default: 512).
    * ``warmup``: the largest number of stream requests routed by the seed heuristic before the first
      decision of a warm episode (default 0: every episode starts from empty pools; see Starting State). From config:
      ``+env.warmup=N``. An assumption of the long-running router's state: its pools warmed by the
      fallback's routing, not the trained policy's (the policy is not known inside the env).
    * ``max_offset``: the largest number of stream requests skipped at reset (default 64; skipped
      requests are still generated, so text workloads pay ~1 ms each; trace workloads also take
      ``random_start=true`` to start anywhere in their window). From config: ``+env.max_offset=N``.
    * ``features``: text representation of the request block, ``hash`` (default) or ``minilm``.
    * ``split``: the workload split it was built on (a label: ``train``, ``val``, ``test``, ...).

    ``info`` of ``step``: ``request_id``, ``step`` (this decision's episode step), ``action``,
    ``action_name``, ``action_valid``, ``quality`` (the decision's quality term), ``quality_p``,
    ``quality_ok``, ``cost`` (decision-time estimate), ``latency`` (request-seconds charged in this step),
    ``slo_violations`` (completions of the step that missed the SLO), ``reward_terms`` (the weighted terms
    of this step's reward), ``credits`` (:class:`~rlroute.types.Credit` list, see Rewards), ``completions`` (the step's
    :class:`~rlroute.types.Completion` list), ``in_system``, ``time``.

    ## Version History

    * v1: per-request reward credit (``reward.credit: request``); episodes drained at truncation so no
      in-flight request is dropped from the return; a failed request's quality is 0; ``info`` gains
      ``credits`` and ``step``, ``latency_integral`` became ``latency``. Same wave, feature schema
      version 2 (one text path, issue 12): the request block is computed from what a client sends, as the
      router computes it — text dims hash the prompt's bytes (token ids only when a client sends ids),
      ``input_tokens`` counts UTF-8 bytes / 4, ``output_tokens`` is the client's cap (workloads draw it;
      the true output is cut at it), ``in_session`` is 1 only for conversations of more than one turn,
      the category dims are reserved (0); policies exported under version 1 are refused by schema hash.
      Feature schema version 3 (router-view cache features, issue 12 item 3): the cache block's prefix
      matches come from the router's approximate trees (``cluster.router_view``, on by default; the class
      ``rlroute serve`` uses), no longer from the engines' caches; policies exported under version 2 are
      refused by schema hash. Feature schema version 4 (one text path for every workload, issue 12 item
      2): a request's block is that of the body a client sends for it (``rlroute.workload.client``: filler
      standing for a trace's context, then the prompt text), so ``mmlu_mooncake``'s ``input_tokens`` is the
      trace's length and timing-only traces hash filler text (not block ids) and score complexity as text;
      text dims and cues read the body's last 4,096 characters; version 3 exports are refused by hash.
    * v0: initial version (feature schema version 1): Park-style step reward, in-flight requests at
      truncation left out of the return.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        workload: Workload,
        quality: QualityModel,
        cluster: Callable[[np.random.Generator], Cluster],
        reward: RewardConfig,
        episode_length: int,
        max_offset: int = 64,
        features: str = "hash",
        warmup: int = 0,
        split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"RoutingEnv has no render modes, got render_mode={render_mode!r}")
        for name, value in (("workload", workload), ("quality", quality), ("cluster", cluster), ("reward", reward)):
            if isinstance(value, Mapping) or value is None:
                raise TypeError(f"RoutingEnv {name}: expected a built object, got {type(value).__name__}; build "
                                "from config with rlroute.env.build.build_env or gymnasium.make('rlroute/Routing-v1')")
        if not callable(cluster):
            raise TypeError(f"RoutingEnv cluster: expected a function rng -> Cluster, got {type(cluster).__name__}")
        if not isinstance(reward, RewardConfig):
            raise TypeError(f"RoutingEnv reward: expected a RewardConfig, got {type(reward).__name__}")
        self.workload = workload
        self.quality = quality
        self.cluster_factory: Callable[[np.random.Generator], Cluster] = cluster
        self.reward_cfg = reward
        if episode_length is None or int(episode_length) < 1:
            raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}")
        self.episode_length = int(episode_length)
        if max_offset < 0:
            raise ValueError(f"max_offset must be >= 0, got {max_offset}")
        self.max_offset = int(max_offset)
        if warmup is None or int(warmup) < 0:
            raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
        self.warmup = int(warmup)
        self._warm: set[int] = set()  # ids of warm-up requests still in flight (their completions are dropped)
        self.extractor = FeatureExtractor(features)
        self.schema = self.extractor.schema
        self.split = split
        self.default_seed = 0
        self.observation_space = gym.spaces.Box(self.schema.low, self.schema.high, dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))
        self.cluster: Cluster | None = None
        self._stream: Iterator[Request] = iter(())
        self._ahead: deque[Request] = deque()  # requests pulled by upcoming() and not yet pending
        self._pending: Request | None = None
        self._state: ClusterState | None = None
        self._matches: dict[str, list[int]] = {}
        self._obs = np.zeros(len(self.schema), dtype=np.float32)
        self._mask = np.ones(3, dtype=bool)
        self._q_rng = np.random.default_rng(0)
        self._steps = 0
        self._in_system = 0
        self._exhausted = False
        # request id -> (decision step, quality term, its baseline: paid alone when the request fails)
        self._open: dict[int, tuple[int, float, float]] = {}

    # -- Gymnasium API ----------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[FloatArray, dict[str, Any]]:
        """Start an episode: fresh cluster and stream seeded from ``self.np_random``."""
        super().reset(seed=seed)
        window = _window((options or {}).get("window"))
        s_wl, s_q, s_cl = (int(x) for x in self.np_random.integers(0, _SEED_HIGH, size=3))
        offset = int(self.np_random.integers(0, self.max_offset + 1)) if self.max_offset else 0
        if window is not None:
            offset = 0
        self.cluster = self.cluster_factory(np.random.default_rng(s_cl))
        hybrid = getattr(self.quality, "hybrid", None)  # a quality model may make no hybrid assumption
        if hybrid is not None:  # plan length / cascade mode are the quality config's assumptions
            self.cluster.hybrid = Hybrid.of(hybrid, self.cluster.hybrid)
        self._q_rng = np.random.default_rng(s_q)

        def stream() -> Iterator[Request]:
            rng = np.random.default_rng(s_wl)
            return self.workload.requests(rng) if window is None else self.workload.requests(rng, window)

        self._stream = islice(stream(), offset, None)
        self._ahead.clear()
        first = self._pull()
        if first is None and offset:
            offset = 0  # the stream is shorter than the offset: start at its beginning
            self._stream = stream()
            first = self._pull()
        if first is None:
            raise ValueError(
                f"workload {getattr(self.workload, 'name', self.workload)!r} yielded no requests"
            )
        self._warm = set()
        warm = 0
        if self.warmup and self.np_random.random() < 0.5:  # half the episodes warm up (Starting State)
            warm = int(self.np_random.integers(1, self.warmup + 1))
        if warm:
            first = warm_up(self.cluster, first, warm, self._stream, self._warm, self.warmup)
            self._draw(first)  # its quality outcomes, as _pull draws them
        self._steps = 0
        self._in_system = 0
        self._exhausted = False
        self._open = {}
        self.cluster.advance(first.arrival)
        self._observe(first)
        return self._obs.copy(), {"request_id": first.id, "time": self.cluster.now, "offset": offset,
                                  "window": window, "warmup": warm}

    def step(self, action: int | np.integer[Any]) -> tuple[FloatArray, float, bool, bool, dict[str, Any]]:
        """Route the pending request with ``action`` and advance the cluster to the next arrival."""
        req, cluster = self._pending, self.cluster
        if req is None or cluster is None:
            raise RuntimeError("RoutingEnv.step called before reset()")
        if self._exhausted:
            raise RuntimeError("the workload stream ended (episode truncated): call reset() before step()")
        try:
            a = Action(int(action))
        except ValueError:
            raise ValueError(f"action must be 0 (large), 1 (small) or 2 (hybrid), got {action!r}") from None
        valid = bool(self._mask[a])
        q = req.quality
        assert q is not None  # drawn in _pull
        rc = self.reward_cfg
        q_term = q.p[a] if rc.quality == "p" else float(q.ok[a])
        base = 0.0
        if rc.quality_baseline == "small":  # q(action) - q(small): see rlroute.env.reward
            base = q.p[Action.SMALL] if rc.quality == "p" else float(q.ok[Action.SMALL])
            q_term -= base
        cost = self.expected_cost(req, a)
        step = self._steps
        self._open[req.id] = (step, float(q_term), float(base))
        t0 = cluster.now
        cluster.submit(req, a)
        n = self._in_system + 1
        nxt = self._pull()
        t1 = nxt.arrival if nxt is not None else t0
        done = self._decided(cluster.advance(t1))
        self._steps += 1
        self._exhausted = nxt is None
        truncated = self._steps >= self.episode_length or self._exhausted
        self._observe(nxt if nxt is not None else req)  # the state at the next arrival, before any drain
        self._in_system = n - len(done)
        if truncated:
            done = done + self.drain()  # in-flight requests finish and are paid in this final step
        # Requests in system: n on [t0, t1) minus each completion from its finish time to t1 (drained
        # completions finish after t1 and add their time beyond it).
        latency_integral = n * (t1 - t0) - sum(t1 - c.finish for c in done)
        credits, terms, latency, misses = self._pay(done, float(q_term), cost, latency_integral)
        reward = terms["quality"] + terms["cost"] + terms["latency"] + terms["slo"]
        info = {
            "request_id": req.id,
            "step": step,
            "action": int(a),
            "action_name": ACTION_NAMES[a],
            "action_valid": valid,
            "quality": float(q_term),
            "quality_p": float(q.p[a]),
            "quality_ok": bool(q.ok[a]),
            "cost": float(cost),
            "latency": float(latency),
            "slo_violations": misses,
            "reward_terms": terms,
            "credits": credits,
            "completions": CompletionList(done),
            "in_system": self._in_system,
            "time": cluster.now,
        }
        return self._obs.copy(), float(reward), False, truncated, info

    def _pay(
        self, done: list[Completion], q_term: float, cost: float, latency_integral: float
    ) -> tuple[CompletionList, dict[str, float], float, int]:
        """Credits of the completed requests, this step's weighted reward terms (see Rewards), the summed
        own e2e and the number of completions that missed the SLO."""
        rc = self.reward_cfg
        credits = CompletionList()
        q_sum = cost_sum = e2e_sum = 0.0
        misses = 0
        for c in done:
            step, q_c, base = self._open.pop(c.request_id, (-1, 0.0, 0.0))
            q_c = -base if c.failed else q_c
            missed = int(rc.violates(c))
            # == rc.request_reward(q_c, c.cost, c), with the SLO check done once per completion
            credits.append(Credit(c.request_id, step, rc.reward(q_c, c.cost, c.e2e, missed)))
            q_sum, cost_sum, e2e_sum = q_sum + q_c, cost_sum + c.cost, e2e_sum + c.e2e
            misses += missed
        if rc.credit == "park":
            q_sum, cost_sum, e2e_sum = q_term, cost, latency_integral
        terms = {
            "quality": rc.quality_weight * q_sum,
            "cost": -rc.cost_weight * cost_sum,
            "latency": -rc.latency_weight * e2e_sum,
            "slo": -rc.slo_weight * misses,
        }
        return credits, terms, e2e_sum, misses

    def action_masks(self) -> np.ndarray:
        """``bool[3]``: large / small allowed when the pool has a healthy unpaused instance; hybrid when
        both are. All True when nothing is available (so maskable policies always have an action)."""
        return self._mask.copy()

    # -- beyond Gymnasium ----------------------------------------------------------------------------------
    def decision_context(self) -> DecisionContext:
        """The pending decision as hand-written policies see it (same obs, state, matches and mask)."""
        if self._pending is None or self._state is None:
            raise RuntimeError("RoutingEnv.decision_context called before reset()")
        return DecisionContext(
            request=self._pending,
            state=self._state,
            matches=self._matches,
            obs=self._obs.copy(),
            mask=self._mask.copy(),
        )

    def upcoming(self, k: int) -> list[Request]:
        """The next ``k`` requests after the pending one (fewer at the end of the stream), quality drawn,
        without consuming them: the episode is the same whether or not this is called. For what-if
        references that route later arrivals in a simulator fork (:mod:`rlroute.policies.whatif`)."""
        while len(self._ahead) < k:
            req = self._draw(next(self._stream, None))
            if req is None:
                break
            self._ahead.append(req)
        return list(islice(self._ahead, k))

    def drain(self) -> list[Completion]:
        """Finish every request still in flight and return their completions (``step`` calls it at
        truncation and pays them; afterwards there is nothing left and it returns ``[]``)."""
        if self.cluster is None:
            return []
        done = self._decided(self.cluster.drain())
        self._in_system = max(0, self._in_system - len(done))
        return done

    # -- internals -------------------------------------------------------------------------------------------
    def _pull(self) -> Request | None:
        """Next request of the stream with its quality outcomes drawn (None at the end of the stream)."""
        if self._ahead:
            return self._ahead.popleft()
        return self._draw(next(self._stream, None))

    def _decided(self, done: list[Completion]) -> list[Completion]:
        """``done`` without the warm-up requests' completions."""
        if not self._warm:
            return done
        out = []
        for c in done:
            if c.request_id in self._warm:
                self._warm.discard(c.request_id)
            else:
                out.append(c)
        return out

    def _draw(self, req: Request | None) -> Request | None:
        if req is not None:
            req.quality = self.quality.draw(req, self._q_rng)  # in stream order, peeked or not
        return req

    def _observe(self, req: Request) -> None:
        cluster = self.cluster
        assert cluster is not None
        state = cluster.state()
        matches = cluster.prefix_match(req)
        self._pending, self._state, self._matches = req, state, matches
        self._obs = self.extractor.extract(req, state, matches)
        action_mask(state, self._mask)

    def _best_available_match(self, pool: str) -> int:
        state = self._state
        ms = self._matches.get(pool)
        if state is None or not ms or pool not in state.pools:
            return 0
        insts = state.pools[pool].instances
        return max((m for m, i in zip(ms, insts, strict=False) if i.healthy and not i.paused), default=0)

    def expected_cost(self, req: Request, a: Action) -> float:
        """USD of routing ``req`` with ``a``, priced now (see :mod:`rlroute.env.reward`): each stage the action
        runs (:func:`rlroute.cluster.base.action_stages`) at the best prefix match available in its pool; a
        pipelined hybrid adds its warm-up and prices the answer's prompt as cached."""
        cluster = self.cluster
        assert cluster is not None
        price = cluster.cost_model.request_cost
        cost = 0.0
        warm = warmup_stage(a, req, cluster.hybrid)
        if warm is not None:  # the pipelined warm-up prefills the prompt: the answer then finds it cached
            cost += price(warm[0], warm[1], self._best_available_match(warm[0]), 0)
        for pool, prompt, output, _ in action_stages(a, req, cluster.hybrid):
            cached = self._best_available_match(pool)
            if warm is not None and pool == warm[0]:
                cached = max(cached, min(len(req.blocks) * req.block_size, req.input_len))
            cost += price(pool, prompt, cached, output)
        return cost
