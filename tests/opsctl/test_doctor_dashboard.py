"""`opsctl doctor` prints the stack's dashboard URL (the platform's SSM parameter)."""

from __future__ import annotations

import json

URL = "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#dashboards:name=test-ml-worker"


def test_doctor_prints_the_dashboard_url(stack, opsctl):
    stack.client("ssm").put_parameter(Name="/zivohealth/test/ml_worker/dashboard_url", Value=URL, Type="String")
    table = opsctl("doctor", "--only", "queue")
    assert table.exit_code == 0, table.output
    assert table.stdout.rstrip().endswith(f"dashboard: {URL}")
    data = json.loads(opsctl("doctor", "--only", "queue", "--json").stdout)
    assert data["dashboard_url"] == URL


def test_doctor_without_a_dashboard_says_nothing_of_it(stack, opsctl):
    result = opsctl("doctor", "--only", "queue")
    assert result.exit_code == 0 and "dashboard" not in result.stdout
    assert json.loads(opsctl("doctor", "--only", "queue", "--json").stdout)["dashboard_url"] is None
