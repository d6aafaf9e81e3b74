"""The generic consumer alone, against the moto server over HTTP: no database, no model, no lab tests."""

from __future__ import annotations

import json
import threading
import time

from worker.consumer import Consumer, ConsumerOptions, PoisonMessage, done, poison, retry


def options(**overrides) -> ConsumerOptions:
    values = {"batch_size": 10, "wait_time": 0, "visibility_timeout": 30, "heartbeat": 5, "retry_backoff": 2,
              "retry_backoff_max": 60, "shutdown_deadline": 5}
    values.update(overrides)
    return ConsumerOptions(**values)


def send(sqs, url: str, *bodies: str, attributes: dict | None = None) -> list[str]:
    return [sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes or {})["MessageId"]
            for body in bodies]


def receive_all(sqs, url: str, wait: int = 0) -> list[dict]:
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                               MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"]
                               ).get("Messages", [])


def counts(sqs, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


class Recorder:
    """A handler that records its batches and answers from a rule."""

    def __init__(self, rule=lambda message: done()):
        self.batches: list[list] = []
        self.rule = rule

    def __call__(self, messages):
        self.batches.append(list(messages))
        return {message.message_id: self.rule(message) for message in messages}


def test_finished_messages_are_deleted_in_one_batch(sqs, queues):
    send(sqs, queues.url, *[json.dumps({"n": n}) for n in range(3)])
    handler = Recorder()
    calls = []
    consumer = Consumer(queues.url, handler, decode=lambda m: json.loads(m.body), options=options(), sqs=sqs,
                        on_busy=lambda: calls.append("busy"), on_poll=lambda: calls.append("poll"))
    assert consumer.run_once() == 3
    assert sorted(m.payload["n"] for m in handler.batches[0]) == [0, 1, 2]
    assert all(m.max_receive_count == 3 and m.receive_count == 1 for m in handler.batches[0])
    assert counts(sqs, queues.url) == (0, 0)
    assert consumer.stats.deleted == 3
    assert calls == ["poll", "busy"]


def test_transient_failure_backs_off_by_receive_count_then_redrives(sqs, queues):
    send(sqs, queues.url, "flaky")
    handler = Recorder(lambda message: retry("database down"))
    consumer = Consumer(queues.url, handler, options=options(retry_backoff=1, retry_backoff_max=60), sqs=sqs)
    assert options(retry_backoff=10).backoff(1) == 10
    assert options(retry_backoff=10).backoff(3) == 40
    assert options(retry_backoff=10, retry_backoff_max=30).backoff(5) == 30

    assert consumer.run_once() == 1
    assert counts(sqs, queues.url) == (0, 1)  # invisible for 1 s, not the 30 s visibility timeout
    time.sleep(1.5)
    assert consumer.run_once() == 1  # second receive: backoff 2 s
    assert handler.batches[-1][0].receive_count == 2
    assert consumer.run_once() == 0
    time.sleep(2.5)
    assert consumer.run_once() == 1
    assert handler.batches[-1][0].final_attempt
    time.sleep(4.5)
    # Past maxReceiveCount SQS moves it to the DLQ on the next receive.
    assert consumer.run_once() == 0
    assert [m["Body"] for m in receive_all(sqs, queues.dlq_url)] == ["flaky"]


def test_poison_messages_are_dead_lettered_with_the_reason_while_good_ones_complete(sqs, queues):
    attributes = {"JobType": {"DataType": "String", "StringValue": "lab_categorization"},
                  "UserId": {"DataType": "Number", "StringValue": "123"}}
    good = send(sqs, queues.url, '{"ok": true}', attributes=attributes)
    bad = send(sqs, queues.url, "not json at all", attributes=attributes)

    def decode(message):
        try:
            return json.loads(message.body)
        except ValueError:
            raise PoisonMessage("not JSON") from None

    handler = Recorder()
    consumer = Consumer(queues.url, handler, decode=decode, options=options(), sqs=sqs)
    assert consumer.run_once() == 2
    assert [m.message_id for m in handler.batches[0]] == good
    assert counts(sqs, queues.url) == (0, 0)
    [dead] = receive_all(sqs, queues.dlq_url)
    assert dead["Body"] == "not json at all"
    attrs = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert attrs == {"FailureReason": "not JSON", "SourceMessageId": bad[0], "SourceQueueUrl": queues.url,
                     "JobType": "lab_categorization", "UserId": "123"}
    assert consumer.stats.dead_lettered == 1


def test_the_handler_may_reject_a_message_as_poison(sqs, queues):
    send(sqs, queues.url, "a", "b")
    handler = Recorder(lambda m: poison("unsupported") if m.body == "b" else done())
    consumer = Consumer(queues.url, handler, options=options(), sqs=sqs)
    consumer.run_once()
    [dead] = receive_all(sqs, queues.dlq_url)
    assert dead["Body"] == "b"
    assert dead["MessageAttributes"]["FailureReason"]["StringValue"] == "unsupported"
    assert counts(sqs, queues.url) == (0, 0)


def test_dlq_from_settings_when_the_queue_has_no_redrive_policy(sqs, queues):
    plain = sqs.create_queue(QueueName="plain")["QueueUrl"]
    send(sqs, plain, "x")

    def decode(message):
        raise PoisonMessage("bad")

    consumer = Consumer(plain, Recorder(), decode=decode, options=options(dlq_url=queues.dlq_url), sqs=sqs)
    consumer.run_once()
    assert [m["Body"] for m in receive_all(sqs, queues.dlq_url)] == ["x"]


def test_a_handler_that_raises_retries_the_whole_batch(sqs, queues):
    send(sqs, queues.url, "a", "b")

    def broken(messages):
        raise RuntimeError("bug")

    consumer = Consumer(queues.url, broken, options=options(retry_backoff=1), sqs=sqs)
    consumer.run_once()
    assert counts(sqs, queues.url) == (0, 2)
    assert consumer.stats.retried == 2


def test_heartbeat_keeps_a_slow_batch_invisible(sqs, queues):
    send(sqs, queues.url, "slow")
    seen_by_other: list = []

    def slow(messages):
        for _ in range(8):  # 4 s, twice the visibility timeout
            time.sleep(0.5)
            seen_by_other.extend(receive_all(sqs, queues.url))
        return {m.message_id: done() for m in messages}

    consumer = Consumer(queues.url, slow, options=options(visibility_timeout=2, heartbeat=0.5), sqs=sqs)
    consumer.run_once()
    assert seen_by_other == []
    assert counts(sqs, queues.url) == (0, 0)


def test_priority_queue_is_polled_first(sqs, queues):
    priority_url = sqs.create_queue(QueueName="ml-worker-priority")["QueueUrl"]
    send(sqs, queues.url, "normal")
    send(sqs, priority_url, "urgent")
    handler = Recorder()
    consumer = Consumer([priority_url, queues.url], handler, options=options(batch_size=1), sqs=sqs)
    consumer.run_once()
    consumer.run_once()
    assert [batch[0].body for batch in handler.batches] == ["urgent", "normal"]


def test_stop_lets_the_batch_in_work_finish_within_the_deadline(sqs, queues):
    send(sqs, queues.url, "a")
    started = threading.Event()

    def handler(messages):
        started.set()
        time.sleep(1)
        return {m.message_id: done() for m in messages}

    consumer = Consumer(queues.url, handler, options=options(wait_time=1), sqs=sqs)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    assert started.wait(10)
    consumer.stop(deadline=10)
    thread.join(15)
    assert not thread.is_alive()
    assert not consumer.abandoned
    assert counts(sqs, queues.url) == (0, 0)


def test_stop_at_the_deadline_releases_unfinished_messages_at_once(sqs, queues):
    send(sqs, queues.url, "a", "b")
    started, unblock = threading.Event(), threading.Event()

    def stuck(messages):
        started.set()
        unblock.wait(30)
        return {m.message_id: done() for m in messages}

    consumer = Consumer(queues.url, stuck, options=options(wait_time=1, visibility_timeout=300), sqs=sqs)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    assert started.wait(10)
    began = time.monotonic()
    consumer.stop(deadline=1)
    thread.join(10)
    unblock.set()
    assert not thread.is_alive()
    assert time.monotonic() - began < 3
    assert consumer.abandoned
    # Visible again at once, not after the 300 s visibility timeout.
    again = receive_all(sqs, queues.url)
    assert sorted(m["Body"] for m in again) == ["a", "b"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "2" for m in again)


def test_messages_received_after_stop_are_released(sqs, queues):
    send(sqs, queues.url, "late")
    handler = Recorder()
    consumer = Consumer(queues.url, handler, options=options(), sqs=sqs,
                        on_poll=lambda: consumer.stop())
    consumer.run_once()
    assert handler.batches == []
    assert [m["Body"] for m in receive_all(sqs, queues.url)] == ["late"]


def test_after_a_batch_fails_as_a_whole_the_consumer_waits_for_readiness_before_receiving(sqs, queues):
    send(sqs, queues.url, "a")
    database_up = threading.Event()
    database_up.set()
    probes: list[bool] = []

    def ready():
        probes.append(database_up.is_set())
        return database_up.is_set()

    def fails_then_takes_the_database_down(message):
        if len(handler.batches) == 1:
            database_up.clear()  # the outage begins while the first batch is in work
            return retry("database down")
        return done()

    handler = Recorder(fails_then_takes_the_database_down)
    consumer = Consumer(queues.url, handler, options=options(wait_time=0, retry_backoff=0), sqs=sqs, ready=ready)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        time.sleep(2.5)
        assert len(handler.batches) == 1  # not received again although visible at once (backoff 0)
        assert probes[0] and not any(probes[1:]) and len(probes) >= 2
        database_up.set()
        deadline = time.monotonic() + 10
        while counts(sqs, queues.url) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        consumer.stop(1)
        thread.join(10)
    assert len(handler.batches) == 2 and counts(sqs, queues.url) == (0, 0)


def test_while_not_ready_nothing_is_received_and_no_receive_is_spent(sqs, queues):
    send(sqs, queues.url, "a")
    database_up = threading.Event()
    handler = Recorder()
    consumer = Consumer(queues.url, handler, options=options(wait_time=0, ready_max_age=0.5), sqs=sqs,
                        ready=database_up.is_set)
    thread = threading.Thread(target=consumer.run)
    thread.start()
    try:
        time.sleep(2)
        assert handler.batches == []
        assert counts(sqs, queues.url) == (1, 0)
        database_up.set()
        deadline = time.monotonic() + 10
        while not handler.batches and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        consumer.stop(1)
        thread.join(10)
    assert handler.batches[0][0].receive_count == 1  # its first receive, after the wait


def test_a_decoder_that_raises_unexpectedly_dead_letters_that_message_alone(sqs, queues):
    send(sqs, queues.url, "good", "deep")

    def decode(message):
        if message.body == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        return message.body

    handler = Recorder()
    consumer = Consumer(queues.url, handler, decode=decode, options=options(), sqs=sqs)
    assert consumer.run_once() == 2  # no exception escapes
    assert [m.body for m in handler.batches[0]] == ["good"]
    [dead] = receive_all(sqs, queues.dlq_url)
    assert dead["Body"] == "deep"
    assert dead["MessageAttributes"]["FailureReason"]["StringValue"].startswith(
        "could not decode: RecursionError: maximum recursion depth exceeded")
    assert counts(sqs, queues.url) == (0, 0)


class FlakySqs:
    """The real client, except that its first receive raises an error botocore never raises."""

    def __init__(self, sqs):
        self.sqs, self.failed = sqs, False

    def receive_message(self, **kwargs):
        if not self.failed:
            self.failed = True
            raise MemoryError("a bug, not an outage")
        return self.sqs.receive_message(**kwargs)

    def __getattr__(self, name):
        return getattr(self.sqs, name)


def test_no_error_ends_the_loop(sqs, queues):
    send(sqs, queues.url, "a")
    handler = Recorder()
    consumer = Consumer(queues.url, handler, options=options(wait_time=0), sqs=FlakySqs(sqs))
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not handler.batches and time.monotonic() < deadline:
        time.sleep(0.1)
    assert thread.is_alive()
    consumer.stop(1)
    thread.join(10)
    assert [m.body for batch in handler.batches for m in batch] == ["a"]


def test_the_dlq_forward_counts_attribute_bytes_and_cuts_the_reason_not_the_body(sqs, queues):
    from worker.consumer import SQS_MAX_MESSAGE_BYTES, sqs_message_size

    attributes = {"JobType": {"DataType": "String", "StringValue": "lab_categorization"},
                  "Blob": {"DataType": "Binary", "BinaryValue": b"\x00" * 100}}
    body = "x" * (SQS_MAX_MESSAGE_BYTES - 400)
    [message_id] = send(sqs, queues.url, body, attributes=attributes)
    assert sqs_message_size(body, attributes) <= SQS_MAX_MESSAGE_BYTES
    reason = "contract violation: " + "why " * 500

    def decode(message):
        raise PoisonMessage(reason)

    forwarded: list[dict] = []
    sqs.meta.events.register("provide-client-params.sqs.SendMessage", lambda params, **_: forwarded.append(params))
    try:
        Consumer(queues.url, Recorder(), decode=decode, options=options(), sqs=sqs).run_once()
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.SendMessage")
    [params] = forwarded
    assert params["MessageBody"] == body
    assert sqs_message_size(params["MessageBody"], params["MessageAttributes"]) <= SQS_MAX_MESSAGE_BYTES
    kept = params["MessageAttributes"]["FailureReason"]["StringValue"]
    assert reason.startswith(kept.removesuffix("…")) and len(kept) < len(reason)
    assert params["MessageAttributes"]["SourceMessageId"]["StringValue"] == message_id
    [dead] = receive_all(sqs, queues.dlq_url)
    assert dead["Body"] == body


def test_a_batch_failed_by_an_outage_is_given_back_without_spending_its_receives(sqs, queues):
    send(sqs, queues.url, "a", "b", attributes={"JobType": {"DataType": "String", "StringValue": "x"}})
    handler = Recorder(lambda message: retry("database down"))
    consumer = Consumer(queues.url, handler, options=options(retry_backoff=1), sqs=sqs, ready=lambda: False)
    consumer.run_once()
    assert consumer.stats.requeued == 2 and consumer.stats.retried == 0
    time.sleep(1.5)  # the copies are delayed by the backoff
    copies = receive_all(sqs, queues.url, wait=1)
    assert sorted(m["Body"] for m in copies) == ["a", "b"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in copies)  # counting afresh
    assert all(m["MessageAttributes"]["JobType"]["StringValue"] == "x" for m in copies)


def test_a_batch_that_fails_while_its_dependency_is_up_spends_its_receive(sqs, queues):
    send(sqs, queues.url, "a")
    handler = Recorder(lambda message: retry("a bug"))
    consumer = Consumer(queues.url, handler, options=options(retry_backoff=1), sqs=sqs, ready=lambda: True)
    consumer.run_once()
    assert consumer.stats.requeued == 0 and consumer.stats.retried == 1
    time.sleep(1.5)
    [again] = receive_all(sqs, queues.url, wait=1)
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"  # on its way to the DLQ after 3
