"""The simulator's behaviour lock (``tests/sim_lock.py``): the fixed cases compute bit-identical outcomes.

A failure means the simulator now computes something else (a completion, a state field, a prefix match,
a floating-point rounding). If that is a performance change, fix it. If it is an intended semantic change,
regenerate the references in the same commit (``PYTHONPATH=. python tests/sim_lock.py --write``) and say
why in the commit message (the module doc of ``tests/sim_lock.py`` says when that is legitimate).
"""

from __future__ import annotations

import json

import pytest

from tests.sim_lock import CASES, REFERENCE, Case, data_present, run_case

REF = json.loads(REFERENCE.read_text())


def test_every_case_has_a_reference() -> None:
    assert sorted(REF) == sorted(c.name for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_simulator_outcomes_are_bit_identical(case: Case) -> None:
    if case.needs_data and not data_present():
        pytest.skip("the Mooncake trace is not under any data root (../shared/data or $RLROUTE_DATA)")
    got = run_case(case)
    want = REF[case.name]
    assert got == want, f"{case.name}: the simulator's outcomes changed (see tests/sim_lock.py before regenerating)"
