"""The routing service (``rlroute serve``): OpenAI/SGLang front, guarded ONNX policy with the heuristic
fallback, in-pool worker choice, retries and circuit breakers, admin API. Modules: ``app`` (front),
``decision`` (policy slot + fallback), ``upstream`` (workers, state, health), ``proxy`` (forwarding: the one retry loop),
``admin``, ``metrics``, ``config``, ``launch`` (process launcher for tests/benches), ``cli``; ``reliability`` (retry budget and backoff, circuit breaker, health thresholds),
``errors`` (OpenAI-shaped error answers)."""
