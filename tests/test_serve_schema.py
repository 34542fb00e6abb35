"""Property-based API test of the router with schemathesis: no generated request gets a 5xx.

Bounded: a handful of examples per operation against 1 large + 1 small emulated worker (fast speed-up),
the router without a policy (the decision path is the same; the policy path is covered in test_serve.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from rlroute.cluster.live.launch import WorkerFleet, WorkerSpec
from rlroute.serve.launch import RouterProc


@pytest.fixture(scope="module")
def router_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("schema")
    fleet = WorkerFleet([WorkerSpec("large", "qwen3-235b-a22b-fp8__h100x8", 5000.0),
                         WorkerSpec("small", "qwen3-4b__h100", 5000.0)], tmp / "fleet")
    fleet.start()
    try:
        r = RouterProc(fleet.urls("large"), fleet.urls("small"), tmp / "router.log", env={"RLROUTE_ADMIN_TOKEN": "s"})
        try:
            yield r.url
        finally:
            r.stop()
    finally:
        fleet.stop()


def test_no_server_errors(router_url: str) -> None:
    schema = schemathesis.openapi.from_url(router_url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/generate", "/v1/chat/completions", "/v1/completions", "/health"} <= paths
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        check()
