"""Fixtures for the platform tests: the program run under mocks (see mlw_mocks).

The program directory `platform/` is not a package (`platform` is a stdlib name) and its modules
are named `mlw_*`, as is this directory's helper, so putting both on sys.path shadows nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1] / "platform"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from mlw_mocks import ACCOUNT, Program, run_program  # noqa: E402


@pytest.fixture(scope="session")
def program() -> Program:
    """The committed production stack with its example values filled in (no priority queue, NAT)."""
    return run_program()


@pytest.fixture(scope="session")
def priority_program() -> Program:
    """The same with the optional priority queue, an alarm e-mail, an operator role and VPC endpoints."""
    return run_program({"priorityQueue": True, "alarmEmail": "oncall@example.com",
                        "operatorRoleArns": [f"arn:aws:iam::{ACCOUNT}:role/ops"],
                        "vpcEndpoints": True, "privateRouteTableIds": ["rtb-0cc3333333333333c"]})
