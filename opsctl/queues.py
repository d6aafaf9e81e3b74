"""`opsctl queue`: the main, priority and dead-letter queues at a glance."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError

from opsctl import render
from opsctl.errors import OpsError, error_code
from opsctl.options import DlqUrlOpt, JsonOpt, PriorityQueueUrlOpt, QueueUrlOpt, examples
from opsctl.state import State, get_state

app = typer.Typer(help="The worker's SQS queues.", no_args_is_help=True,
                  epilog=examples("opsctl queue depth", "opsctl queue depth --watch"))

DEPTH_ATTRIBUTES = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed", "QueueArn"]


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def queue_attributes(state: State, url: str, names: list[str] | None = None) -> dict[str, str]:
    """A queue's attributes; a missing queue is a one-line error naming it."""
    try:
        response = state.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names or DEPTH_ATTRIBUTES)
    except ClientError as error:
        if "NonExistentQueue" in error_code(error) or "QueueDoesNotExist" in error_code(error):
            raise OpsError(f"queue {url} does not exist",
                           hint="check --env, --region and the queue URL (flag, ML_WORKER_* env var or SSM)") from None
        raise
    return response.get("Attributes", {})


def oldest_ages(state: State, names: list[str]) -> dict[str, float | None]:
    """ApproximateAgeOfOldestMessage per queue from CloudWatch (None where it has no datapoint)."""
    ages: dict[str, float | None] = {name: None for name in names}
    now = datetime.now(UTC)
    queries = [{"Id": f"q{i}", "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage",
                   "Dimensions": [{"Name": "QueueName", "Value": name}]},
        "Period": 60, "Stat": "Maximum"}} for i, name in enumerate(names)]
    try:
        response = state.client("cloudwatch").get_metric_data(
            MetricDataQueries=queries, StartTime=now - timedelta(minutes=15), EndTime=now, ScanBy="TimestampDescending")
    except (ClientError, BotoCoreError):
        return ages  # CloudWatch is a nice-to-have here
    for result in response.get("MetricDataResults", []):
        index = int(result["Id"][1:])
        if result.get("Values"):
            ages[names[index]] = float(result["Values"][0])
    return ages


def fetch_depth(state: State) -> dict:
    resources = state.resources
    urls = [resources.get("queue_url")]
    priority = resources.optional("priority_queue_url")
    if priority:
        urls.append(priority)
    urls.append(resources.get("dlq_url"))
    rows = []
    for url in urls:
        attributes = queue_attributes(state, url)
        rows.append({"name": queue_name(url), "url": url,
                     "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
                     "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                     "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
                     "oldest_age_s": None})
    ages = oldest_ages(state, [row["name"] for row in rows])
    for row in rows:
        row["oldest_age_s"] = ages.get(row["name"])
    return {"queues": rows}


@app.command(epilog=examples("opsctl queue depth", "opsctl queue depth --watch --interval 5",
                             "opsctl --env staging queue depth --json"))
def depth(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between refreshes.")] = 5.0,
    queue_url: QueueUrlOpt = None,
    priority_queue_url: PriorityQueueUrlOpt = None,
    dlq_url: DlqUrlOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Visible, in-flight and delayed messages and the oldest message's age, per queue.

    Covers the main queue, the priority queue (if any) and the DLQ. The age comes from
    CloudWatch (ApproximateAgeOfOldestMessage, last 15 minutes); "—" where it has none.
    """
    state = get_state(ctx, json_output, queue_url=queue_url, priority_queue_url=priority_queue_url,
                      dlq_url=dlq_url)
    if not watch:
        render.queue_depth(state, fetch_depth(state))
        return

    def table(data: dict):
        return render.queue_table(data, f"{render.when(datetime.now(UTC))}; every {interval:g}s, Ctrl-C to stop")

    try:
        render.watch(state, lambda: fetch_depth(state), interval, table, time.sleep)
    except KeyboardInterrupt:
        return
