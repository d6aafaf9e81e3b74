"""What a load run prints: progress lines on stderr and one line of figures at the end."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from worker.local.load.verify import Verdict

# Log events counted across all workers, to show which paths the faults exercised.
EVENT_NAMES = ("retried", "released", "dead_lettered", "duplicate_acks", "requeued")


def log(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class LoadReport:
    jobs: int
    tests: int
    messages: int
    faults: dict[str, int]
    poison: int
    verdict: Verdict
    wall_s: float
    notes: list[str] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def line(self) -> str:
        v = self.verdict
        faults = ",".join(f"{kind}:{count}" for kind, count in self.faults.items() if count)
        return (f"load: jobs={self.jobs} tests={self.tests} messages={self.messages} "
                f"faults={sum(self.faults.values())} ({faults}) "
                f"done={v.done_jobs} lost={len(v.lost)} duplicated={len(v.duplicated)} "
                f"dlq={v.poison_in_dlq}/{self.poison} poison"
                f"{'' if not v.poison_extra_copies else f' (+{v.poison_extra_copies} extra copies)'}"
                f" good_in_dlq={v.good_in_dlq} "
                f"queues_left={sum(v.queue_left)} wall={self.wall_s:.1f}s "
                f"[worker events: {', '.join(f'{k}={self.events.get(k, 0)}' for k in EVENT_NAMES)}] "
                f"result={'PASS' if self.ok else 'FAIL'}")

    def failures(self) -> str:
        """What went wrong, when something did."""
        v = self.verdict
        return (f"lost documents: {v.lost[:10]}; duplicated: {v.duplicated[:10]}; unexpected rows: "
                f"{v.unexpected_rows}; poison missing from the DLQ: {v.poison_missing[:10]}; "
                f"poison without FailureReason: {v.poison_without_reason[:10]}; good jobs in the DLQ: "
                f"{v.good_in_dlq}; main queue left (visible, in flight, delayed): {v.queue_left}")
