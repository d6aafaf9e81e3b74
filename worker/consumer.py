"""A generic, reliable SQS consumer. It knows nothing about what is inside the messages.

Like bbc/sqs-consumer: a small loop object with explicit options and a handler.

    consumer = Consumer([priority_url, queue_url], handler, decode=decode, options=ConsumerOptions(...))
    consumer.run()          # until consumer.stop() (the runtime calls it on SIGTERM/SIGINT)

- ``decode(message)`` turns a message into its payload, or raises :class:`PoisonMessage`: such a
  message is never retried; the consumer sends it to the dead-letter queue itself (found from the
  source queue's RedrivePolicy, or ``options.dlq_url``) with the reason in the ``FailureReason``
  attribute (cut to what fits SQS's size limit beside the body, never the body), then deletes it
  from the source queue. A decoder that raises anything else has met a message it cannot read:
  that message is poison too, with the error as its reason.
- ``handler(messages)`` gets the batch's decoded messages and returns a :class:`Result` per
  message id: :func:`done` (deleted, in one batch call, while the next poll receives),
  :func:`retry` (left undeleted, its visibility set to a backoff that grows with its receive
  count; after the queue's maxReceiveCount SQS redrives it), or :func:`poison` (dead-lettered).
  A message without a result, or a handler that raises, means retry.
- Queues are polled in the order given: the first ones (priority) with a short poll, the last one
  with a long poll, so a priority message is always taken first.
- While the handler works (in a worker thread), the consumer's thread extends the batch's
  visibility every ``heartbeat`` seconds, so a slow batch is never handed to a second consumer.
- ``ready()`` (optional): is what the handler depends on able to do its work? Each receive
  spends one of a message's receives, so the consumer does not receive while it is not: it
  calls ``ready()`` before receiving whenever no batch has succeeded for ``ready_max_age``
  seconds, and after a batch in which every message failed; while it says no, the consumer
  probes again with a growing pause and receives nothing. An outage then costs a message at
  most the receive during which it began, whichever worker held it; and not even that one: a
  batch that failed as a whole while ``ready()`` says no is given back as fresh copies (receive
  count 0, delayed by the backoff) and the originals deleted, since the outage, not the
  messages, failed it.
- ``stop()``: stop receiving, let the batch in work finish within ``shutdown_deadline`` seconds,
  release whatever is unfinished with visibility 0 (visible to the next consumer at once), return.
  If the handler is still running at the deadline, ``abandoned`` is set: the handler must be
  idempotent, since its messages will be delivered again.
- No error ends ``run()``: what escapes a poll is logged and the loop pauses, then goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

SQS_MAX_BATCH = 10
SQS_MAX_VISIBILITY = 43200
SQS_MAX_DELAY = 900
SQS_MAX_MESSAGE_ATTRIBUTES = 10
# SQS counts the body and the message attributes against one 256 KiB limit.
SQS_MAX_MESSAGE_BYTES = 256 * 1024
MAX_REASON_LENGTH = 4000
RECEIVE_ERROR_PAUSE_MAX = 30.0


class PoisonMessage(Exception):  # noqa: N818 - a kind of message, raised by decoders
    """Raised by a decoder for a message that can never succeed; ``reason`` goes to the DLQ."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class Outcome(Enum):
    DONE = "done"
    RETRY = "retry"
    POISON = "poison"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    reason: str | None = None


def done() -> Result:
    return Result(Outcome.DONE)


def retry(reason: str) -> Result:
    return Result(Outcome.RETRY, reason)


def poison(reason: str) -> Result:
    return Result(Outcome.POISON, reason)


@dataclass(slots=True)
class Message:
    queue_url: str
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, dict[str, Any]]
    max_receive_count: int | None = None
    payload: Any = None
    # Log fields the decoder or handler adds (e.g. a job id); every log line about the message carries them.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def final_attempt(self) -> bool:
        """True when a failure now sends the message to the DLQ (its receive count reached the policy's)."""
        return self.max_receive_count is not None and self.receive_count >= self.max_receive_count

    def log_fields(self, **extra: Any) -> dict[str, Any]:
        return {"message_id": self.message_id, "receive_count": self.receive_count, **self.context, **extra}


Handler = Callable[[list[Message]], Mapping[str, Result]]
Decoder = Callable[[Message], Any]
Hook = Callable[[], None]


@dataclass(slots=True)
class ConsumerOptions:
    batch_size: int = 10
    wait_time: int = 20
    visibility_timeout: int = 300
    heartbeat: float = 60.0
    retry_backoff: float = 10.0
    retry_backoff_max: float = 300.0
    shutdown_deadline: float = 90.0
    dlq_url: str | None = None
    # Shorter than the first retry backoff: a message given back at an outage's start is not
    # received again by a worker that has not yet met the outage.
    ready_max_age: float = 1.0

    def backoff(self, receive_count: int) -> int:
        """Seconds a failed message stays invisible: retry_backoff doubling with each receive, capped."""
        seconds = self.retry_backoff * 2 ** max(0, receive_count - 1)
        return int(min(seconds, self.retry_backoff_max, SQS_MAX_VISIBILITY))


@dataclass(slots=True)
class ConsumerStats:
    received: int = 0
    deleted: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0
    requeued: int = 0


@dataclass(slots=True)
class _QueueInfo:
    dlq_url: str | None
    max_receive_count: int | None


def sqs_message_size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes SQS counts against its size limit: the body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode()) + len(attribute.get("BinaryValue", b""))
    return size


def _own_attributes(message: Message, skip: Collection[str] = (), room: int = SQS_MAX_MESSAGE_ATTRIBUTES
                    ) -> dict[str, dict[str, Any]]:
    """The message's attributes as SendMessage takes them (at most ``room``, none named in ``skip``)."""
    attributes: dict[str, dict[str, Any]] = {}
    for name, value in message.message_attributes.items():
        if name in skip or len(attributes) >= room:
            continue
        kept = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                kept[key] = value[key]
        attributes[name] = kept
    return attributes


def _dead_letter_attributes(message: Message, body: str, reason: str) -> dict[str, dict[str, Any]]:
    """The message's own attributes plus ours, the reason cut to what fits beside the body."""
    ours = {
        "FailureReason": {"DataType": "String", "StringValue": ""},
        "SourceMessageId": {"DataType": "String", "StringValue": message.message_id},
        "SourceQueueUrl": {"DataType": "String", "StringValue": message.queue_url},
    }
    attributes = _own_attributes(message, skip=ours, room=SQS_MAX_MESSAGE_ATTRIBUTES - len(ours))
    attributes.update(ours)
    room = SQS_MAX_MESSAGE_BYTES - sqs_message_size(body, attributes)
    while room < 16 and len(attributes) > len(ours):  # a body at the limit: its own attributes give way
        dropped = next(name for name in attributes if name not in ours)
        room += sqs_message_size("", {dropped: attributes.pop(dropped)})
    reason = (reason or "unknown")[:MAX_REASON_LENGTH]
    if len(reason.encode()) > room:
        reason = reason.encode()[:max(0, room - 3)].decode(errors="ignore") + "…"
    attributes["FailureReason"]["StringValue"] = reason
    return attributes


class Consumer:
    def __init__(self, queue_urls: str | Sequence[str], handler: Handler, decode: Decoder | None = None,
                 options: ConsumerOptions | None = None, sqs: Any = None,
                 on_busy: Hook | None = None, on_idle: Hook | None = None, on_poll: Hook | None = None,
                 ready: Callable[[], bool] | None = None):
        self.queue_urls = [queue_urls] if isinstance(queue_urls, str) else list(queue_urls)
        if not self.queue_urls:
            raise ValueError("no queue to consume")
        self.handler = handler
        self.decode = decode
        self.options = options or ConsumerOptions()
        if sqs is None:
            from worker import aws

            sqs = aws.client("sqs")
        self.sqs = sqs
        self.on_busy, self.on_idle, self.on_poll = on_busy, on_idle, on_poll
        self.ready = ready
        self._suspect = False
        self._healthy_at = float("-inf")  # when a batch last succeeded or ready() last said yes
        self.stats = ConsumerStats()
        self.abandoned = False
        self._stopping = threading.Event()
        self._stop_deadline: float | None = None
        self._queues: dict[str, _QueueInfo] = {}
        # A finished batch is deleted while the next one is received (its results are already saved).
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqs-delete")
        self._deleting: Future | None = None

    # ---- control -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, deadline: float | None = None) -> None:
        """Stop receiving; the batch in work gets ``deadline`` seconds (default: the option) to finish.

        Safe to call from a signal handler; a second call may shorten the deadline (e.g. to 0).
        """
        seconds = self.options.shutdown_deadline if deadline is None else deadline
        new_deadline = time.monotonic() + seconds
        if self._stop_deadline is None or new_deadline < self._stop_deadline:
            self._stop_deadline = new_deadline
        self._stopping.set()

    def run(self) -> None:
        """Receive and handle batches until stop()."""
        log.info("consumer started", extra={"queues": self.queue_urls, "batch_size": self.options.batch_size,
                                            "wait_time": self.options.wait_time,
                                            "visibility_timeout": self.options.visibility_timeout})
        pause = 1.0
        while not self.stopping:
            if self.ready is not None and (
                    self._suspect or time.monotonic() - self._healthy_at > self.options.ready_max_age):
                self._wait_until_ready()
                continue
            try:
                self._poll()
                pause = 1.0
            except (BotoCoreError, ClientError) as error:
                log.error("receiving failed; pausing %.0f s", pause, extra={"error": repr(error)})
                self._stopping.wait(pause)
                pause = min(pause * 2, RECEIVE_ERROR_PAUSE_MAX)
            except Exception:  # a bug must not end the process: the queue keeps what was not deleted
                log.exception("the consumer loop failed; pausing %.0f s", pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, RECEIVE_ERROR_PAUSE_MAX)
        self._finish_deleting()
        log.info("consumer stopped", extra={"abandoned": self.abandoned})

    def run_once(self) -> int:
        """One poll of the queues (priority first) and the handling of what it brought; returns its size."""
        try:
            return self._poll()
        finally:
            self._finish_deleting()

    def _poll(self) -> int:
        for position, queue_url in enumerate(self.queue_urls):
            last = position == len(self.queue_urls) - 1
            messages = self._receive(queue_url, self.options.wait_time if last else 0)
            self._finish_deleting()
            if messages:
                self._call(self.on_poll)
                if self.stopping:
                    self._release(messages)
                    return len(messages)
                self._process(messages)
                return len(messages)
            if self.stopping:
                break
        self._call(self.on_poll)
        self._call(self.on_idle)
        return 0

    # ---- SQS -----------------------------------------------------------------------------

    def _queue_info(self, queue_url: str) -> _QueueInfo:
        info = self._queues.get(queue_url)
        if info is not None:
            return info
        policy = None
        try:
            attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["RedrivePolicy"])
            raw = attributes.get("Attributes", {}).get("RedrivePolicy")
            policy = json.loads(raw) if raw else None
        except (BotoCoreError, ClientError, ValueError) as error:
            log.warning("could not read the queue's redrive policy", extra={"queue_url": queue_url,
                                                                          "error": repr(error)})
            return _QueueInfo(self.options.dlq_url, None)  # not cached: try again next time
        dlq_url = self.options.dlq_url
        max_receive_count = int(policy["maxReceiveCount"]) if policy and "maxReceiveCount" in policy else None
        if dlq_url is None and policy and policy.get("deadLetterTargetArn"):
            arn = policy["deadLetterTargetArn"].split(":")
            try:
                dlq_url = self.sqs.get_queue_url(QueueName=arn[-1], QueueOwnerAWSAccountId=arn[4])["QueueUrl"]
            except (BotoCoreError, ClientError) as error:
                log.warning("could not find the dead-letter queue", extra={"queue_url": queue_url,
                                                                         "error": repr(error)})
                return _QueueInfo(None, max_receive_count)
        info = self._queues[queue_url] = _QueueInfo(dlq_url, max_receive_count)
        return info

    def _receive(self, queue_url: str, wait_time: int) -> list[Message]:
        response = self.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=self.options.batch_size,
            WaitTimeSeconds=wait_time,
            VisibilityTimeout=self.options.visibility_timeout,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        raw = response.get("Messages", [])
        if not raw:
            return []
        info = self._queue_info(queue_url)
        messages = [
            Message(queue_url=queue_url, message_id=item["MessageId"], receipt_handle=item["ReceiptHandle"],
                    body=item.get("Body", ""), attributes=item.get("Attributes", {}),
                    message_attributes=item.get("MessageAttributes", {}),
                    max_receive_count=info.max_receive_count)
            for item in raw
        ]
        self.stats.received += len(messages)
        log.info("messages received", extra={"count": len(messages), "queue_url": queue_url,
                                             "message_ids": [m.message_id for m in messages]})
        return messages

    def _batches(self, messages: Sequence[Message]):
        for start in range(0, len(messages), SQS_MAX_BATCH):
            yield list(messages[start:start + SQS_MAX_BATCH])

    def _delete(self, messages: Sequence[Message]) -> None:
        for chunk in self._batches(messages):
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=chunk[0].queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)],
                )
            except (BotoCoreError, ClientError) as error:
                # The work is saved; the message comes back after its visibility timeout and the
                # handler's idempotency makes the redelivery harmless.
                for message in chunk:
                    log.error("message not deleted", extra=message.log_fields(error=repr(error)))
                continue
            failed = {entry["Id"]: entry for entry in response.get("Failed", [])}
            for i, message in enumerate(chunk):
                if str(i) in failed:
                    log.error("message not deleted", extra=message.log_fields(error=failed[str(i)].get("Message")))
                else:
                    self.stats.deleted += 1
                    log.info("message deleted", extra=message.log_fields())

    def _finish_deleting(self) -> None:
        """Wait for the previous batch's delete (it logs its own failures)."""
        if self._deleting is not None:
            self._deleting.result()
            self._deleting = None

    def _change_visibility(self, messages: Sequence[Message], seconds: Callable[[Message], int], what: str) -> None:
        for chunk in self._batches(messages):
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=chunk[0].queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds(m)}
                             for i, m in enumerate(chunk)],
                )
            except (BotoCoreError, ClientError) as error:
                log.warning("visibility change failed", extra={"what": what, "error": repr(error),
                                                               "message_ids": [m.message_id for m in chunk]})
                continue
            for entry in response.get("Failed", []):
                message = chunk[int(entry["Id"])]
                log.warning("visibility change failed", extra=message.log_fields(what=what,
                                                                                 error=entry.get("Message")))

    def _release(self, messages: Sequence[Message]) -> None:
        """Make unfinished messages visible again at once (shutdown)."""
        if not messages:
            return
        self._change_visibility(messages, lambda m: 0, "release")
        self.stats.released += len(messages)
        for message in messages:
            log.info("message released", extra=message.log_fields())

    def _schedule_retry(self, messages: Sequence[Message], reasons: Mapping[str, str]) -> None:
        if not messages:
            return
        self._change_visibility(messages, lambda m: self.options.backoff(m.receive_count), "retry")
        self.stats.retried += len(messages)
        for message in messages:
            log.warning("message will be retried", extra=message.log_fields(
                retry_in=self.options.backoff(message.receive_count), error=reasons.get(message.message_id),
                final_attempt=message.final_attempt))

    def _requeue(self, messages: Sequence[Message], reasons: Mapping[str, str]) -> None:
        """Give failed messages back as fresh copies (receive count 0), delayed by their backoff, and
        delete the originals: a message that failed because a dependency was down has not used up
        one of its receives. Whatever cannot be copied is retried as usual. A copy sent whose
        original could not be deleted is a duplicate delivery, which the handler must tolerate."""
        copied: list[Message] = []
        for chunk in self._batches(messages):
            try:
                response = self.sqs.send_message_batch(QueueUrl=chunk[0].queue_url, Entries=[
                    {"Id": str(i), "MessageBody": m.body, "MessageAttributes": _own_attributes(m),
                     "DelaySeconds": min(self.options.backoff(m.receive_count), SQS_MAX_DELAY)}
                    for i, m in enumerate(chunk)])
            except (BotoCoreError, ClientError) as error:
                log.warning("could not give messages back as fresh copies", extra={"error": repr(error)})
                continue
            copied.extend(chunk[int(entry["Id"])] for entry in response.get("Successful", []))
        for message in copied:
            log.warning("message given back as a fresh copy: it failed because a dependency is down",
                        extra=message.log_fields(error=reasons.get(message.message_id)))
        self.stats.requeued += len(copied)
        self._delete(copied)
        given_back = {m.message_id for m in copied}
        self._schedule_retry([m for m in messages if m.message_id not in given_back], reasons)

    def _probe(self) -> bool:
        try:
            return bool(self.ready())
        except Exception:  # a probe that raises means "not ready"
            return False

    def _dead_letter(self, message: Message, reason: str) -> bool:
        """Send a poison message to the DLQ with its reason, then delete it from its queue."""
        dlq_url = self._queue_info(message.queue_url).dlq_url
        if dlq_url is None:
            log.error("poison message but no dead-letter queue: leaving it to the queue",
                      extra=message.log_fields(reason=reason))
            self._change_visibility([message], lambda m: int(self.options.retry_backoff_max), "poison")
            return False
        body = message.body or "(empty)"
        attributes = _dead_letter_attributes(message, body, reason)
        try:
            self.sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageAttributes=attributes)
        except (BotoCoreError, ClientError) as error:
            log.error("could not dead-letter the message; it will be retried",
                      extra=message.log_fields(reason=reason, error=repr(error)))
            self._schedule_retry([message], {message.message_id: reason})
            return False
        self.stats.dead_lettered += 1
        log.error("message dead-lettered", extra=message.log_fields(reason=reason, dlq_url=dlq_url))
        self._delete([message])
        return True

    # ---- a batch -------------------------------------------------------------------------

    def _process(self, messages: list[Message]) -> None:
        decoded: list[Message] = []
        for message in messages:
            if self.decode is None:
                message.payload = message.body
                decoded.append(message)
                continue
            try:
                message.payload = self.decode(message)
            except PoisonMessage as error:
                self._dead_letter(message, error.reason)
            except Exception as error:  # noqa: BLE001 - whatever breaks the decoder is this message's fault
                self._dead_letter(message, f"could not decode: {type(error).__name__}: {error}")
            else:
                decoded.append(message)
        if not decoded:
            return
        self._call(self.on_busy)
        results = self._handle(decoded)
        if results is None:  # abandoned at the shutdown deadline
            self._release(decoded)
            return
        finished, failed, reasons = [], [], {}
        for message in decoded:
            result = results.get(message.message_id) or retry("the handler returned no result")
            if result.outcome is Outcome.DONE:
                finished.append(message)
            elif result.outcome is Outcome.POISON:
                self._dead_letter(message, result.reason or "rejected by the handler")
            else:
                failed.append(message)
                reasons[message.message_id] = result.reason or "failed"
        self._finish_deleting()
        self._deleting = self._deleter.submit(self._delete, finished) if finished else None
        # A batch that failed as a whole points at a dependency (a database outage): check it is
        # back before receiving more, rather than spending every queued message's receive count.
        self._suspect = bool(failed) and not finished and self.ready is not None
        if finished:
            self._healthy_at = time.monotonic()
        if self.stopping:
            # Shutting down: a failed message is better retried at once by the next consumer.
            self._release(failed)
        elif self._suspect and not self._probe():
            # The dependency is down now: the failure is the outage's, not the messages'.
            self._requeue(failed, reasons)
        else:
            self._schedule_retry(failed, reasons)

    def _wait_until_ready(self) -> None:
        """Probe ``ready()`` with a growing pause, without receiving, until it passes or stop()."""
        pause = 1.0
        waited = False
        while not self.stopping:
            if self._probe():
                if waited or self._suspect:
                    log.info("dependencies ready again: resuming")
                self._suspect = False
                self._healthy_at = time.monotonic()
                return
            waited = True
            log.warning("a dependency is unavailable: not receiving; checking again in %.0f s", pause)
            self._stopping.wait(pause)
            pause = min(pause * 2, RECEIVE_ERROR_PAUSE_MAX)

    def _handle(self, messages: list[Message]) -> Mapping[str, Result] | None:
        """Run the handler in a worker thread and keep the batch invisible until it returns.

        Returns None when the shutdown deadline passed first (the batch is abandoned).
        """
        outcome: dict[str, Any] = {}
        finished = threading.Event()

        def work() -> None:
            try:
                outcome["results"] = self.handler(messages)
            except Exception as error:  # the handler's bug or outage: retry the whole batch
                log.exception("handler failed", extra={"message_ids": [m.message_id for m in messages]})
                reason = f"{type(error).__name__}: {error}"
                outcome["results"] = {m.message_id: retry(reason) for m in messages}
            finally:
                finished.set()

        thread = threading.Thread(target=work, name="batch-handler", daemon=True)
        thread.start()
        next_beat = time.monotonic() + self.options.heartbeat
        while not finished.wait(self._wait_step(next_beat)):
            now = time.monotonic()
            if self.stopping and self._stop_deadline is not None and now >= self._stop_deadline:
                self.abandoned = True
                log.warning("shutdown deadline reached with the batch in work; releasing it",
                            extra={"message_ids": [m.message_id for m in messages]})
                return None
            if now >= next_beat:
                self._change_visibility(messages, lambda m: self.options.visibility_timeout, "heartbeat")
                log.debug("visibility extended", extra={"count": len(messages),
                                                        "visibility_timeout": self.options.visibility_timeout})
                next_beat = now + self.options.heartbeat
        return outcome["results"]

    def _wait_step(self, next_beat: float) -> float:
        step = max(0.0, next_beat - time.monotonic())
        if self.stopping and self._stop_deadline is not None:
            step = min(step, max(0.0, self._stop_deadline - time.monotonic()))
        return min(step, 0.5) if self.stopping else min(step, 1.0)

    def _call(self, hook: Hook | None) -> None:
        if hook is None:
            return
        try:
            hook()
        except Exception:  # a hook (health file, task protection, stats) never stops the work
            log.exception("consumer hook failed")
