"""The job contract: versioned messages, the legacy format, specific errors."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.consumer import sqs_message_size
from worker.contract import SCHEMA_VERSION, InvalidJobError, decode_job, new_job

TESTS = [{"test_name": "Hemoglobin", "test_value": "14.5", "test_unit": "g/dL"},
         {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]


def test_new_job_round_trips_through_the_body():
    job = new_job(123, 456, TESTS)
    decoded = decode_job(job.to_body(), message_id="ignored")
    assert decoded == job
    assert decoded.schema_version == SCHEMA_VERSION
    assert decoded.test_count == 2
    assert len(job.job_id) == 32


def test_legacy_message_takes_a_job_id_derived_from_its_content():
    legacy = {"job_type": "lab_categorization", "user_id": 123, "document_id": 456, "priority": "normal",
              "submitted_at": "2026-11-28T10:00:00+00:00", "test_count": 2,
              "tests": [{"test_name": "Hemoglobin", "test_value": 14.5, "test_unit": "g/dL"},
                        {"test_name": "WBC Count", "test_value": "7.2", "test_unit": "K/uL"}]}
    job = decode_job(json.dumps(legacy), message_id="msg-1")
    assert job.job_id == "legacy-" + job.fingerprint()[:32]
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
    assert sqs_message_size(job.to_body(), attributes) == expected


# -- what the store cannot hold is refused at once (issue 15) -----------------------------------
GOOD = {"user_id": 1, "document_id": 2, "tests": TESTS}
BIGINT_MAX = 2**63 - 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"user_id": BIGINT_MAX + 1}, "user_id"),
        ({"document_id": 2**64}, "document_id"),
        ({"user_id": True}, "user_id"),
        ({"document_id": "456"}, "document_id"),
        ({"user_id": 12.0}, "user_id"),
        ({"test_count": True, "tests": TESTS[:1]}, "test_count"),
        ({"schema_version": True}, "schema_version"),
        ({"job_id": "abc\x00def"}, "job_id"),
        ({"job_id": "j" * 101}, "job_id"),
        ({"tests": [{"test_name": "Hemo\x00globin"}]}, "tests.0.test_name"),
        ({"tests": [{"test_name": "Hb", "test_value": "14\x1b[2J"}]}, "tests.0.test_value"),
        ({"tests": [{"test_name": "Hb", "test_unit": "g/\ndL"}]}, "tests.0.test_unit"),
        ({"tests": [{"test_name": "Hb", "specimen": "blood\x07"}]}, "tests.0.specimen"),
        ({"tests": [{"test_name": "Hb", "test_value": "1" * 201}]}, "tests.0.test_value"),
        ({"tests": [{"test_name": "Hb", "test_unit": "u" * 51}]}, "tests.0.test_unit"),
        ({"tests": [{"test_name": "Hb", "specimen": "s" * 101}]}, "tests.0.specimen"),
        ({"tests": [{"test_name": "Hb"}] * 1001}, "tests"),
        ({"job_type": "x" * 200_000}, "job_type"),
    ],
)
def test_the_contract_refuses_what_the_store_cannot_hold(changes, field):
    with pytest.raises(InvalidJobError) as caught:
        decode_job(json.dumps(GOOD | changes), message_id="m")
    assert caught.value.field == field
    assert len(str(caught.value)) < 300  # the reason names the problem; it never echoes a 200 KB value


def test_a_tab_is_text_and_the_largest_bigint_is_an_id():
    job = decode_job(json.dumps(GOOD | {"user_id": BIGINT_MAX, "tests": [{"test_name": "Hb\tA1c"}]}), "m")
    assert job.user_id == BIGINT_MAX and job.tests[0].test_name == "Hb\tA1c"


def test_deeply_nested_json_is_poison_not_a_crash():
    for body in ("[" * 100_000, '{"tests": ' + "[" * 50_000 + "]" * 50_000 + "}"):
        with pytest.raises(InvalidJobError) as caught:
            decode_job(body, message_id="m")
        assert caught.value.field == "body"
        assert "nested" in caught.value.reason


def test_new_job_refuses_no_tests_and_bools_with_the_field_named():
    with pytest.raises(InvalidJobError) as caught:
        new_job(1, 2, None)
    assert caught.value.field == "tests"
    with pytest.raises(InvalidJobError) as caught:
        new_job(True, 2, TESTS)
    assert caught.value.field == "user_id"


def test_a_legacy_message_sent_twice_gets_one_content_derived_job_id():
    legacy = {"user_id": 123, "document_id": 456, "tests": TESTS}
    first = decode_job(json.dumps(legacy), message_id="msg-1")
    again = decode_job(json.dumps(legacy), message_id="msg-2")
    other = decode_job(json.dumps(legacy | {"document_id": 457}), message_id="msg-3")
    assert first.job_id == again.job_id != other.job_id
    assert first.job_id.startswith("legacy-")
    assert first.fingerprint() == again.fingerprint() != other.fingerprint()


def test_the_fingerprint_is_the_jobs_content():
    job = new_job(1, 2, TESTS)
    same = decode_job(job.to_body(), "m")
    assert same.fingerprint() == job.fingerprint()
    for changes in ({"user_id": 3}, {"document_id": 3}, {"tests": TESTS[:1]}):
        changed = decode_job(json.dumps(json.loads(job.to_body()) | {"test_count": None} | changes), "m")
        assert changed.fingerprint() != job.fingerprint()


# -- the property: any bytes are a job, or poison with a reason; never anything else -----------
def _assert_storable(job) -> None:
    assert 0 < job.user_id <= BIGINT_MAX and 0 < job.document_id <= BIGINT_MAX
    texts = [job.job_id] + [value for test in job.tests
                            for value in (test.test_name, test.test_value, test.test_unit, test.specimen) if value]
    for value in texts:
        assert not any(ord(ch) < 32 and ch != "\t" for ch in value), value
        value.encode("utf-8")  # no lone surrogates
        assert len(value) <= 200


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=True), st.text(max_size=30))
# Ids near the edges of what PostgreSQL's BIGINT holds, and the values a lax parser would coerce.
_ids = st.one_of(st.sampled_from([0, 1, BIGINT_MAX, BIGINT_MAX + 1, 2**64, True, "7", 7.0]),
                 st.integers(min_value=1, max_value=2**64), _scalars)
_text = st.one_of(st.text(min_size=1, max_size=30), st.text(st.characters(max_codepoint=0x20), max_size=5))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                     max_leaves=20)
_test = st.fixed_dictionaries({"test_name": _text}, optional={
    "test_value": st.one_of(_text, _scalars), "test_unit": _text, "specimen": _text})
# Mostly near-valid jobs (so that many decode and the property about them is exercised), sometimes anything.
_job_like = st.fixed_dictionaries(
    {"user_id": _ids, "document_id": _ids, "tests": st.one_of(st.lists(_test, min_size=1, max_size=3), _json)},
    optional={"job_id": _text, "job_type": st.one_of(st.just("lab_categorization"), _scalars),
              "schema_version": st.one_of(st.just(1), _ids), "priority": st.sampled_from(["low", "normal", "x"]),
              "test_count": _ids, "submitted_at": st.one_of(st.just("2026-11-28T10:00:00+00:00"), _scalars)})


def _decode_or_poison(body) -> None:
    try:
        job = decode_job(body, message_id="m")
    except InvalidJobError as error:
        assert error.field and error.reason
        return
    _assert_storable(job)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), st.integers(1, 100_000).map(lambda depth: b"[" * depth)))
def test_any_bytes_decode_to_a_storable_job_or_are_poison_with_a_reason(body):
    _decode_or_poison(body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_job_like)
def test_any_job_shaped_json_decodes_to_a_storable_job_or_is_poison_with_a_reason(payload):
    _decode_or_poison(json.dumps(payload, allow_nan=True))
    _decode_or_poison(json.dumps(payload).encode("utf-16"))
