"""The job contract: the SQS message the API sends and the worker reads (schema version 1).

One module that the producer, the worker and opsctl all import. It depends on pydantic only.
Messages from the app's existing producer lack ``job_id`` and ``schema_version``; they parse
too, and take a job id derived from their content, so a duplicate send stays one job.

A message that decodes is one the store can hold: ids within PostgreSQL's BIGINT, strict
integers (no bools, no strings), no control characters (tab aside) and bounded lengths in every
text field. Anything else is refused here, with the field named, before it reaches a batch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

JOB_TYPE = "lab_categorization"
SCHEMA_VERSION = 1
PRIORITIES = ("low", "normal", "high")
MAX_TEST_NAME_LENGTH = 200
MAX_TEST_VALUE_LENGTH = 200
MAX_TEST_UNIT_LENGTH = 50
MAX_SPECIMEN_LENGTH = 100
MAX_JOB_ID_LENGTH = 100
MAX_TESTS = 1000
# The store keeps ids in BIGINT columns.
MAX_ID = 2**63 - 1
# A message attribute that marks an operator's test job (opsctl send-test); the worker records it.
TEST_ATTRIBUTE = "Test"
# Operators' test jobs go to this user and document: no real user has them.
TEST_USER_ID = MAX_ID
TEST_DOCUMENT_ID = MAX_ID

Priority = Literal["low", "normal", "high"]


def _no_control_characters(value: str) -> str:
    for character in value:
        if (character < " " and character != "\t") or character == "\x7f":
            raise ValueError(f"contains the control character U+{ord(character):04X}")
    return value


def _text(max_length: int, min_length: int = 0):
    return Annotated[str, Field(min_length=min_length, max_length=max_length), AfterValidator(_no_control_characters)]


Id = Annotated[int, Field(strict=True, gt=0, le=MAX_ID)]


class InvalidJobError(ValueError):
    """A job that breaks the contract. ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")

    @classmethod
    def from_validation(cls, error: ValidationError) -> InvalidJobError:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "message"
        return cls(field, first["msg"])


class LabTest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    test_name: _text(MAX_TEST_NAME_LENGTH, min_length=1)
    test_value: _text(MAX_TEST_VALUE_LENGTH) | None = None
    test_unit: _text(MAX_TEST_UNIT_LENGTH) | None = None
    specimen: _text(MAX_SPECIMEN_LENGTH) | None = None

    @field_validator("test_value", "test_unit", "specimen", mode="before")
    @classmethod
    def _scalar_to_text(cls, value: Any) -> Any:
        # The old producer sends numbers for values; the worker stores text as written.
        if isinstance(value, bool):
            raise ValueError("must be text or a number")
        if isinstance(value, int | float):
            return str(value)
        return value


class LabCategorizationJob(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_type: Literal["lab_categorization"] = JOB_TYPE
    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: _text(MAX_JOB_ID_LENGTH, min_length=1) | None = None
    user_id: Id
    document_id: Id
    priority: Priority = "normal"
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    test_count: int | None = Field(default=None, strict=True, ge=1, le=MAX_TESTS)
    tests: list[LabTest] = Field(min_length=1, max_length=MAX_TESTS)

    @model_validator(mode="after")
    def _count_matches(self) -> LabCategorizationJob:
        if self.test_count is None:
            self.test_count = len(self.tests)
        elif self.test_count != len(self.tests):
            raise ValueError(f"test_count is {self.test_count} but {len(self.tests)} tests were sent")
        return self

    def to_body(self) -> str:
        return self.model_dump_json()

    def message_attributes(self, test: bool = False) -> dict[str, dict[str, str]]:
        attributes = {
            "JobType": {"DataType": "String", "StringValue": self.job_type},
            "Priority": {"DataType": "String", "StringValue": self.priority},
            "UserId": {"DataType": "Number", "StringValue": str(self.user_id)},
        }
        if test:
            attributes[TEST_ATTRIBUTE] = {"DataType": "String", "StringValue": "true"}
        return attributes

    def fingerprint(self) -> str:
        """A digest of what the job asks for (user, document, tests): equal for a redelivery, not for a
        different job that reuses the id. Priority and submission time are not the job's content."""
        return content_fingerprint(self.user_id, self.document_id,
                                   [test.model_dump(exclude_none=True) for test in self.tests])


def content_fingerprint(user_id: int, document_id: int, tests: list[dict[str, Any]]) -> str:
    canonical = json.dumps([user_id, document_id, tests], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_job(user_id: int, document_id: int, tests: Any, priority: str = "normal") -> LabCategorizationJob:
    """Build and validate a new job; raises InvalidJobError naming the bad field."""
    try:
        return LabCategorizationJob(
            job_id=uuid.uuid4().hex,
            user_id=user_id,
            document_id=document_id,
            priority=priority,
            tests=tests,
        )
    except ValidationError as error:
        raise InvalidJobError.from_validation(error) from None


def _shown(value: Any) -> str:
    """A value quoted in a reason, cut short: a reason never carries a 200 KB field."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decode_job(body: str | bytes, message_id: str) -> LabCategorizationJob:
    """Parse an SQS body into a job. Raises InvalidJobError, and nothing else, for anything the worker
    cannot do or the store cannot hold.

    Legacy messages (no job_id) take a job id derived from their content (``message_id`` is kept
    for the caller's logs only), so that sending the same legacy job twice writes one result set.
    """
    try:
        payload = json.loads(body)
    except RecursionError:
        raise InvalidJobError("body", "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidJobError("body", f"not JSON ({_shown(str(error))[1:-1]})") from None
    if not isinstance(payload, dict):
        raise InvalidJobError("body", "not a JSON object")
    job_type = payload.get("job_type", JOB_TYPE)
    if job_type != JOB_TYPE:
        raise InvalidJobError("job_type", f"unknown job type {_shown(job_type)}")
    version = payload.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidJobError("schema_version", f"unsupported schema version {_shown(version)}")
    try:
        job = LabCategorizationJob.model_validate(payload)
    except ValidationError as error:
        raise InvalidJobError.from_validation(error) from None
    except RecursionError:
        raise InvalidJobError("body", "JSON nested too deeply") from None
    if job.job_id is None:
        job.job_id = "legacy-" + job.fingerprint()[:32]
    return job
