"""ECS task scale-in protection against a small local stand-in for the agent's endpoint."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.protection import TaskProtection


class AgentStandIn:
    """Serves PUT /task-protection/v1/state like the ECS agent and records the requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail = False
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.requests.append({"path": self.path, **body})
                if stand_in.fail:
                    reply, status = {"error": {"Code": "ServerException", "Message": "agent busy"}}, 500
                else:
                    reply, status = {"protection": {"ProtectionEnabled": body["ProtectionEnabled"],
                                                    "TaskArn": "arn:aws:ecs:us-east-1:123:task/c/t"}}, 200
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/v3/task-id"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent():
    stand_in = AgentStandIn()
    yield stand_in
    stand_in.close()


def test_on_when_busy_off_when_idle(agent):
    protection = TaskProtection(agent.uri, visibility_timeout=300)
    protection.busy()
    protection.busy()  # already on: no second request
    protection.idle()
    protection.idle()  # already off
    assert agent.requests == [
        {"path": "/v3/task-id/task-protection/v1/state", "ProtectionEnabled": True, "ExpiresInMinutes": 10},
        {"path": "/v3/task-id/task-protection/v1/state", "ProtectionEnabled": False},
    ]


def test_expiry_is_longer_than_the_visibility_timeout():
    for visibility in (30, 300, 900, 3600):
        assert TaskProtection("http://x", visibility).expires_minutes * 60 > visibility


def test_failures_are_logged_and_never_raise(agent, caplog):
    agent.fail = True
    protection = TaskProtection(agent.uri, visibility_timeout=300)
    protection.busy()
    assert not protection.enabled
    assert "task protection update failed" in caplog.text
    agent.fail = False
    protection.busy()  # tried again on the next busy batch
    assert protection.enabled
    unreachable = TaskProtection("http://127.0.0.1:9", visibility_timeout=300, timeout=0.5)
    unreachable.busy()
    unreachable.idle()
    assert not unreachable.enabled


def test_nothing_happens_off_ecs():
    protection = TaskProtection(None)
    protection.busy()
    protection.idle()
    assert not protection.active and not protection.enabled


def test_the_worker_protects_itself_while_busy(agent, sqs, queues, run_worker, waiter, db):
    from worker.contract import new_job

    job = new_job(1, 2, [{"test_name": "Hemoglobin", "test_value": "14", "test_unit": "g/dL"}])
    with run_worker(ecs_agent_uri=agent.uri):
        sqs.send_message(QueueUrl=queues.url, MessageBody=job.to_body())
        waiter(lambda: len(agent.requests) >= 2, what="protection on then off")
    assert [r["ProtectionEnabled"] for r in agent.requests[:2]] == [True, False]
