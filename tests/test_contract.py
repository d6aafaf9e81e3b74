"""The job contract: versioned messages, the legacy format, specific errors."""

import json

import pytest

from worker.contract import SCHEMA_VERSION, InvalidJobError, decode_job, message_size, new_job

TESTS = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
         {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]


def test_new_job_round_trips_through_the_body():
    job = new_job(123, 456, TESTS)
    decoded = decode_job(job.to_body(), message_id="ignored")
    assert decoded == job
    assert decoded.schema_version == SCHEMA_VERSION
    assert decoded.test_count == 2
    assert len(job.job_id) == 32


def test_legacy_message_takes_the_sqs_message_id_as_job_id():
    legacy = {"job_type": "lab_categorization", "user_id": 123, "document_id": 456, "priority": "normal",
              "submitted_at": "2026-11-28T10:00:00+00:00", "test_count": 2,
              "tests": [{"test_name": "Hemoglobin", "test_value": 14.5, "test_unit": "g/dL"},
                        {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]}
    job = decode_job(json.dumps(legacy), message_id="msg-1")
    assert job.job_id == "msg-1"
    assert job.schema_version == 1
    assert job.tests[0].test_value == "14.5"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        (json.dumps({"job_type": "ocr", "user_id": 1, "document_id": 1, "tests": TESTS}), "job_type"),
        (json.dumps({"schema_version": 2, "user_id": 1, "document_id": 1, "tests": TESTS}), "schema_version"),
        (json.dumps({"user_id": 0, "document_id": 1, "tests": TESTS}), "user_id"),
        (json.dumps({"user_id": 1, "tests": TESTS}), "document_id"),
        (json.dumps({"user_id": 1, "document_id": 1, "tests": []}), "tests"),
        (json.dumps({"user_id": 1, "document_id": 1, "tests": [{"test_name": "  "}]}), "tests.0.test_name"),
        (json.dumps({"user_id": 1, "document_id": 1, "priority": "urgent", "tests": TESTS}), "priority"),
        (json.dumps({"user_id": 1, "document_id": 1, "test_count": 3, "tests": TESTS}), "message"),
    ],
)
def test_decode_rejects_with_the_field_named(body, field):
    with pytest.raises(InvalidJobError) as caught:
        decode_job(body, message_id="m")
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_message_size_counts_body_and_attributes():
    job = new_job(1, 2, TESTS)
    attributes = job.message_attributes()
    expected = len(job.to_body().encode()) + sum(
        len(name) + len(a["DataType"]) + len(a["StringValue"]) for name, a in attributes.items())
    assert message_size(job.to_body(), attributes) == expected
