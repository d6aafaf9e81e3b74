"""queue depth and the DLQ verbs against moto over HTTP."""

from __future__ import annotations

import json

from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

OK = AWSResponse("http://sqs.emulated", 200, {}, None)  # a canned answer for APIs moto lacks


def job(n: int) -> dict:
    return {"job_type": "lab_categorization", "schema_version": 1, "job_id": f"job-{n}", "user_id": 123,
            "document_id": 456, "tests": [{"test_name": "Hemoglobin", "test_value": "14.5"}]}


def job_ids(messages: list[dict]) -> list[str]:
    return sorted(json.loads(m["Body"])["job_id"] for m in messages)


# -- queue depth ------------------------------------------------------------------------------
def test_queue_depth_json_lists_main_and_dlq(stack, opsctl):
    stack.send(stack.queue_url, job(1))
    stack.send(stack.queue_url, job(2))
    stack.send(stack.dlq_url, job(3))
    result = opsctl("queue", "depth", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [q["name"] for q in data["queues"]] == ["test-ml-worker-queue", "test-ml-worker-dlq"]
    main, dlq = data["queues"]
    assert set(main) == {"name", "url", "visible", "in_flight", "delayed", "oldest_age_s"}
    assert (main["visible"], main["in_flight"], main["delayed"], main["oldest_age_s"]) == (2, 0, 0, None)
    assert main["url"] == stack.queue_url
    assert dlq["visible"] == 1


def test_queue_depth_table_with_priority_queue_and_in_flight(make_stack, opsctl):
    stack = make_stack(priority=True)
    stack.send(stack.priority_url, job(1))
    stack.send(stack.queue_url, job(2))
    stack.client("sqs").receive_message(QueueUrl=stack.queue_url, VisibilityTimeout=60)
    result = opsctl("queue", "depth")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "test-ml-worker" in line]
    assert len(lines) == 3
    assert "test-ml-worker-priority" in lines[1] and " 1 " in lines[1]
    main = lines[0].split("│")
    assert [cell.strip() for cell in main[2:5]] == ["0", "1", "0"]  # visible, in flight, delayed
    assert "—" in lines[0]  # no CloudWatch age in moto
    assert "\x1b[" not in result.stdout  # no colour off a terminal


def test_global_json_flag_works_before_the_command(stack, opsctl):
    result = opsctl("--json", "queue", "depth")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["queues"][0]["name"] == "test-ml-worker-queue"


def test_queue_depth_watch_refreshes_until_ctrl_c(stack, opsctl, monkeypatch):
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 1:
            stack.send(stack.queue_url, job(9))
            return
        raise KeyboardInterrupt

    monkeypatch.setattr("opsctl.queues.time.sleep", sleep)
    result = opsctl("queue", "depth", "--watch", "--interval", "1", "--json")
    assert result.exit_code == 0, result.output
    decoder, text, docs = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    assert [d["queues"][0]["visible"] for d in docs] == [0, 1]
    assert calls == [1.0, 1.0]


def test_queue_depth_watch_updates_in_place_on_a_terminal(stack, opsctl, monkeypatch):
    import io

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr("opsctl.render.console", lambda stderr=False: Console(file=screen, force_terminal=True,
                                                                              width=120))
    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) > 1:
            raise KeyboardInterrupt
        stack.send(stack.queue_url, job(1))

    monkeypatch.setattr("opsctl.queues.time.sleep", sleep)
    result = opsctl("queue", "depth", "--watch")
    assert result.exit_code == 0, result.output
    assert "Ctrl-C to stop" in screen.getvalue() and "\x1b[" in screen.getvalue()  # a live, coloured view
    assert calls == [5.0, 5.0]


def test_missing_queue_is_one_line_error(stack, opsctl):
    stack.client("sqs").delete_queue(QueueUrl=stack.dlq_url)
    result = opsctl("queue", "depth")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr and "test-ml-worker-dlq" in result.stderr and "hint:" in result.stderr


def test_unresolvable_queue_names_every_source(make_stack, opsctl):
    make_stack(ssm=False)
    result = opsctl("queue", "depth", env="nowhere")
    assert result.exit_code == 1
    assert "no queue found for env 'nowhere'" in result.stderr
    assert "ML_WORKER_SQS_QUEUE_URL" in result.stderr and "/zivohealth/nowhere/ml_worker/queue_url" in result.stderr


# -- dlq peek ---------------------------------------------------------------------------------
def test_peek_shows_failure_reason_and_leaves_messages_visible(stack, opsctl):
    stack.send(stack.dlq_url, job(1), {"FailureReason": "tests.0.test_name: too long",
                                       "SourceMessageId": "m-1", "SourceQueueUrl": stack.queue_url})
    stack.send(stack.dlq_url, "not json at all")
    result = opsctl("dlq", "peek", "--json")
    assert result.exit_code == 0, result.output
    messages = json.loads(result.stdout)["messages"]
    assert len(messages) == 2
    by_reason = {m["failure_reason"]: m for m in messages}
    poison = by_reason["tests.0.test_name: too long"]
    assert poison["body"]["job_id"] == "job-1" and poison["source_message_id"] == "m-1"
    assert poison["receive_count"] >= 1 and poison["first_receive_at"] and poison["last_receive_at"]
    assert by_reason[None]["body"] == "not json at all"
    assert stack.depth(stack.dlq_url) == (2, 0)  # visible again right away

    table = opsctl("dlq", "peek", "-n", "5")
    assert table.exit_code == 0
    assert "too long" in table.stdout and '"job_id": "job-1"' in table.stdout
    assert "failure reason  —" in table.stdout  # the SQS-redriven one carries no reason
    assert stack.depth(stack.dlq_url) == (2, 0)


def test_peek_respects_n_and_reports_an_empty_dlq(stack, opsctl):
    assert "is empty" in opsctl("dlq", "peek").stdout
    for n in range(4):
        stack.send(stack.dlq_url, job(n))
    result = opsctl("dlq", "peek", "-n", "2", "--json")
    assert len(json.loads(result.stdout)["messages"]) == 2
    assert stack.depth(stack.dlq_url) == (4, 0)


# -- dlq redrive ------------------------------------------------------------------------------
def test_redrive_falls_back_to_message_by_message_on_moto(make_stack, opsctl):
    stack = make_stack(priority=True)
    for n in range(12):
        stack.send(stack.dlq_url, job(n))
    stack.send(stack.dlq_url, job(99), {"FailureReason": "boom", "SourceMessageId": "x",
                                        "SourceQueueUrl": stack.priority_url})
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 0, result.output
    assert "moved 13 message(s)" in result.stdout and "message by message" in result.stdout
    assert "no SQS message-move task" in result.stderr
    assert stack.depth(stack.dlq_url) == (0, 0)
    main = stack.drain(stack.queue_url)
    priority = stack.drain(stack.priority_url)
    assert job_ids(main) == sorted(f"job-{n}" for n in range(12))
    assert job_ids(priority) == ["job-99"]
    assert "FailureReason" not in priority[0].get("MessageAttributes", {})  # a fresh start


def test_redrive_max_and_dry_run(stack, opsctl):
    for n in range(5):
        stack.send(stack.dlq_url, job(n))
    dry = opsctl("dlq", "redrive", "--dry-run", "--json")
    assert dry.exit_code == 0
    data = json.loads(dry.stdout)
    assert (data["dry_run"], data["available"], data["moved"], data["method"]) == (True, 5, 0, "message by message")
    assert stack.depth(stack.dlq_url) == (5, 0)
    result = opsctl("dlq", "redrive", "--max", "3")
    assert result.exit_code == 0, result.output
    assert "moved 3 message(s)" in result.stdout
    assert stack.depth(stack.dlq_url)[0] + stack.depth(stack.dlq_url)[1] == 2
    assert stack.depth(stack.queue_url) == (3, 0)


def test_interrupted_redrive_loses_nothing(stack, opsctl, hook):
    for n in range(25):
        stack.send(stack.dlq_url, job(n))
    sends = []

    def fail_third_batch(**kwargs):
        sends.append(1)
        if len(sends) == 3:
            raise EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com/")

    hook("before-call.sqs.SendMessageBatch", fail_third_batch)
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "Could not connect" in result.stderr
    # The third batch was received but not sent: it is visible in the DLQ again at once.
    assert stack.depth(stack.dlq_url) == (5, 0)
    moved, left = stack.drain(stack.queue_url), stack.drain(stack.dlq_url)
    assert len(moved) == 20
    assert job_ids(moved + left) == sorted(f"job-{n}" for n in range(25))


def test_redrive_interrupted_by_ctrl_c_between_send_and_delete_duplicates_but_loses_nothing(stack, opsctl, hook):
    for n in range(3):
        stack.send(stack.dlq_url, job(n))

    def ctrl_c(**kwargs):
        raise KeyboardInterrupt

    hook("before-call.sqs.DeleteMessageBatch", ctrl_c)
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 130
    moved, left = stack.drain(stack.queue_url), stack.drain(stack.dlq_url)
    assert job_ids(moved) == ["job-0", "job-1", "job-2"]  # sent before the interrupt
    assert job_ids(left) == []  or job_ids(left) == job_ids(moved)  # at worst duplicated, never lost


def test_redrive_uses_the_message_move_task_where_supported(stack, opsctl, hook):
    """moto lacks StartMessageMoveTask: emulate the API in front of it, moving messages for real."""
    for n in range(4):
        stack.send(stack.dlq_url, job(n))
    started = {}

    def list_tasks(params, **kwargs):
        assert json.loads(params["body"])["SourceArn"] == stack.dlq_arn
        if not started:
            return OK, {"Results": []}
        return OK, {"Results": [{"TaskHandle": "h-1", "Status": "COMPLETED", "SourceArn": stack.dlq_arn,
                                   "ApproximateNumberOfMessagesMoved": started["moved"],
                                   "ApproximateNumberOfMessagesToMove": started["moved"]}]}

    def start_task(params, **kwargs):
        assert json.loads(params["body"])["DestinationArn"].endswith(":test-ml-worker-queue")
        messages = stack.drain(stack.dlq_url)
        for m in messages:
            stack.send(stack.queue_url, m["Body"])
        started["moved"] = len(messages)
        return OK, {"TaskHandle": "h-1"}

    hook("before-call.sqs.ListMessageMoveTasks", list_tasks)
    hook("before-call.sqs.StartMessageMoveTask", start_task)
    result = opsctl("dlq", "redrive", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["method"], data["moved"]) == ("SQS message-move task", 4)
    assert stack.depth(stack.queue_url) == (4, 0) and stack.depth(stack.dlq_url) == (0, 0)


def test_failed_move_task_is_reported(stack, opsctl, hook):
    stack.send(stack.dlq_url, job(1))
    hook("before-call.sqs.ListMessageMoveTasks", lambda params, **kw: (OK, {"Results": [
        {"TaskHandle": "h-2", "Status": "FAILED", "FailureReason": "AccessDenied",
         "ApproximateNumberOfMessagesMoved": 0}]}))
    hook("before-call.sqs.StartMessageMoveTask", lambda params, **kw: (OK, {"TaskHandle": "h-2"}))
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 1
    assert "message-move task failed" in result.stderr and "AccessDenied" in result.stderr


# -- dlq purge --------------------------------------------------------------------------------
def test_purge_asks_and_respects_no(stack, opsctl):
    stack.send(stack.dlq_url, job(1))
    declined = opsctl("dlq", "purge", input="n\n")
    assert declined.exit_code == 1 and "not purged" in declined.stderr
    assert stack.depth(stack.dlq_url) == (1, 0)
    confirmed = opsctl("dlq", "purge", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "Purge 1 message(s) from test-ml-worker-dlq?" in confirmed.stderr
    assert stack.depth(stack.dlq_url) == (0, 0)


def test_purge_yes_skips_the_question(stack, opsctl):
    stack.send(stack.dlq_url, job(1))
    result = opsctl("dlq", "purge", "--yes", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["purged"] is True
    assert stack.depth(stack.dlq_url) == (0, 0)


def test_purge_without_a_terminal_and_without_yes_aborts(stack, opsctl):
    stack.send(stack.dlq_url, job(1))
    result = opsctl("dlq", "purge")
    assert result.exit_code == 1
    assert stack.depth(stack.dlq_url) == (1, 0)


def access_denied(operation: str):
    from botocore.exceptions import ClientError

    def handler(**kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, operation)

    return handler


def test_redrive_denied_by_the_queue_policy_keeps_messages_and_says_why(stack, opsctl, hook):
    for n in range(3):
        stack.send(stack.dlq_url, job(n))
    hook("before-call.sqs.SendMessageBatch", access_denied("SendMessageBatch"))
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 1
    assert "not allowed to send to test-ml-worker-queue (moved 0" in result.stderr
    assert "operatorRoleArns" in result.stderr and result.stderr.count("\n") == 1
    assert stack.depth(stack.dlq_url) == (3, 0)


def test_redrive_shows_a_progress_bar_on_a_terminal(stack, opsctl, monkeypatch):
    import io

    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr("opsctl.render.console", lambda stderr=False: Console(file=screen, force_terminal=True,
                                                                              width=100, highlight=False))
    for n in range(3):
        stack.send(stack.dlq_url, job(n))
    result = opsctl("dlq", "redrive")
    assert result.exit_code == 0, result.output
    assert "moving" in screen.getvalue() and "3/3" in screen.getvalue()
    assert "moved 3 message(s)" in screen.getvalue()
