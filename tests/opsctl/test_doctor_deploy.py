"""doctor against a healthy and a broken stack; deploy with and without the Pulumi CLI."""

from __future__ import annotations

import json
import os
import stat

from botocore.awsrequest import AWSResponse


def test_doctor_passes_on_a_healthy_stack(stack, opsctl, pg_url, monkeypatch):
    from worker.store.db import make_engine, upgrade

    engine = make_engine(pg_url)
    upgrade(engine)  # the worker's database, which the review backlog line reads
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", pg_url)
    stack.log({"level": "INFO", "message": "worker started"})
    result = opsctl("doctor")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    names = ["aws identity", "service", "queue", "dlq", "base image", "worker image", "ssm parameters", "task role",
             "execution role", "logs", "review backlog"]
    assert [line.split()[0] for line in lines[:-1]] == ["PASS"] * len(names)
    for name, line in zip(names, lines, strict=False):
        assert line[6:].startswith(name), line
    assert "scaled to zero" in lines[1]
    assert "test-ml-worker-queue reachable: 0 visible, 0 in flight" in lines[2]
    assert "database credentials included" in lines[6]
    # moto has no IAM policy simulator: the roles' policies are read instead, and the line says so.
    assert "read from its policies" in lines[7] and "read from its policies" in lines[8]
    assert "uncertain result(s)" in lines[10] and "wait for review" in lines[10]
    assert lines[-1] == "11 passed, 0 failed"


def test_doctor_fails_with_one_line_and_a_hint_per_broken_check(stack, opsctl, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    stack.send(stack.dlq_url, "{}")
    stack.client("ecr").batch_delete_image(repositoryName="test-ml-worker", imageIds=[{"imageTag": "v1"}])
    stack.client("ssm").delete_parameter(Name="/zivohealth/test/database/password")
    stack.client("iam").put_role_policy(RoleName="test-ml-worker-task", PolicyName="queue", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["sqs:*", "ecs:*"], "Resource": "*"},
                                                {"Effect": "Deny", "Action": "sqs:SendMessage", "Resource": "*"}]}))
    result = opsctl("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    failed = {name for name, c in checks.items() if not c["ok"]}
    assert failed == {"dlq", "worker image", "ssm parameters", "task role", "logs"}
    assert checks["dlq"]["detail"] == "test-ml-worker-dlq holds 1 message(s)" and "dlq peek" in checks["dlq"]["hint"]
    assert "no tagged image in test-ml-worker" in checks["worker image"]["detail"]
    assert "/zivohealth/test/database/password" in checks["ssm parameters"]["detail"]
    assert "lacks sqs:SendMessage" in checks["task role"]["detail"]
    assert "no events in the last 24h" in checks["logs"]["detail"]
    assert all(checks[name]["hint"] for name in failed)

    table = opsctl("doctor")
    assert table.exit_code == 1
    fail_lines = [line for line in table.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail_lines) == 5 and all("(hint: " in line for line in fail_lines)
    assert table.stdout.splitlines()[-1] == "5 passed, 5 failed, 1 warning(s)"  # no database: backlog unknown


def test_doctor_on_an_empty_account(make_stack, opsctl):
    make_stack(ssm=False, images=False, logs=False, ecs=False, scaling=False)
    result = opsctl("doctor", "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["aws identity"]["ok"] and checks["queue"]["ok"]  # the queues exist, found by name
    assert "does not exist" in checks["service"]["detail"]
    assert "ECR repository test-ml-worker-base does not exist" == checks["base image"]["detail"]
    assert "log group /ecs/test-ml-worker does not exist" == checks["logs"]["detail"]
    assert not checks["task role"]["ok"]


def test_doctor_uses_the_policy_simulator_where_available(stack, opsctl, hook):
    stack.log({"level": "INFO", "message": "up"})

    def simulate(params, **kwargs):
        body = params["body"]  # the query protocol's parameters, not yet encoded
        actions = [v for k, v in body.items() if k.startswith("ActionNames.member")]
        return AWSResponse("http://iam", 200, {}, None), {"EvaluationResults": [
            {"EvalActionName": a, "EvalDecision": "implicitDeny" if a == "ecr:BatchGetImage" else "allowed"}
            for a in actions]}

    hook("before-call.iam.SimulatePrincipalPolicy", simulate)
    result = opsctl("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["task role"]["ok"] and "(simulated)" in checks["task role"]["detail"]
    assert not checks["execution role"]["ok"] and "lacks ecr:BatchGetImage (simulated)" in \
        checks["execution role"]["detail"]


def test_doctor_only_runs_the_named_checks(stack, opsctl):
    result = opsctl("doctor", "--only", "dlq", "--only", "queue")
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.stdout.splitlines()[:-1]] == ["queue", "dlq"]
    unknown = opsctl("doctor", "--only", "vibes")
    assert unknown.exit_code == 2 and "no check named vibes" in unknown.stderr


# -- deploy -----------------------------------------------------------------------------------
def fake_pulumi(directory, script: str):
    path = directory / "pulumi"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_deploy_without_the_pulumi_cli_says_so(stack, opsctl):
    result = opsctl("deploy")
    assert result.exit_code == 1
    assert "the Pulumi CLI is not installed" in result.stderr and "hint: install it" in result.stderr


def test_deploy_runs_pulumi_up_for_the_stack(stack, opsctl, tmp_path, monkeypatch):
    bin_dir, project = tmp_path / "bin", tmp_path / "project"
    bin_dir.mkdir()
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: ml-worker\nruntime: python\n")
    log = tmp_path / "args"
    fake_pulumi(bin_dir, f'echo "$@" > {log}\necho "AWS_PROFILE=$AWS_PROFILE" >> {log}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.chdir(project)
    result = opsctl("deploy", "--yes")
    assert result.exit_code == 0, result.output
    assert log.read_text().splitlines()[0] == f"up --stack test --cwd {project} --yes"


def test_deploy_reports_a_failed_pulumi_up(stack, opsctl, tmp_path, monkeypatch):
    fake_pulumi(tmp_path, "exit 255\n")
    (tmp_path / "Pulumi.yaml").write_text("name: x\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    result = opsctl("deploy", "--cwd", str(tmp_path))
    assert result.exit_code == 1
    assert "pulumi up --stack test failed (exit 255)" in result.stderr


def test_deploy_outside_a_pulumi_project(stack, opsctl, tmp_path, monkeypatch):
    fake_pulumi(tmp_path, "exit 0\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.chdir("/")
    result = opsctl("deploy")
    assert result.exit_code == 1 and "no Pulumi project" in result.stderr
