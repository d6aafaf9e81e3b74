"""The load and fault suite, split by concern: ``workload`` (what is sent), ``faults`` (what is
injected), ``workers`` (the processes and database), ``verify`` (what is checked), ``report`` (what
is printed) and ``run`` (the run itself).

The suite: N jobs through moto SQS into 3 worker processes writing to PostgreSQL.

    python -m worker.local.load --jobs 2000 [--workers 3] [--database-url URL]
    ./dev load --jobs 2000

What it does, all on loopback and all torn down at the end:

1. starts a moto server (a subprocess) and creates the platform's queue layout: the main queue
   redriving to a DLQ after 3 receives, with a short visibility timeout so the run finishes;
2. creates a throwaway PostgreSQL database on 127.0.0.1:5432 (unless ``--database-url`` is
   given) and puts a small TCP proxy in front of it: the workers reach the database only
   through the proxy, so the suite can make the database refuse connections for a while;
3. sends N jobs of realistic reports (the bundled sample reports, a seeded random mix) through
   the producer client, plus a few legacy-format jobs (no job id, the app's old producer),
   duplicate sends of the same job body, and poison messages of each kind (not JSON, contract
   failures, an unknown job type, and bad-id jobs shaped like good ones, mixed into good
   batches: an id past BIGINT, a NUL in the job id or a test name);
4. runs 3 ``python -m worker`` processes with the packaged model, as a database role of their
   own (no superuser, as in production), and injects faults: SIGKILL of a worker mid-batch
   (then a restart), SIGTERM of another mid-batch (then a restart), the database refusing
   connections for a few seconds, and the database answering but refusing writes (the role's
   INSERT and UPDATE grants revoked) for longer than three receives' backoff;
5. waits (bounded) until every good job is done and the queues are empty, then checks from the
   database and the queues: every good job done exactly once, one result row per test, no
   duplicate rows, every poison message in the DLQ with a ``FailureReason`` attribute, and no
   good job in the DLQ.

It prints one line of figures and exits non-zero when anything was lost or duplicated, when a
poison message is missing from the DLQ, or when the queues are not empty.
"""
