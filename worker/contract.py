"""The job contract: the SQS message the API sends and the worker reads (schema version 1).

One module that the producer, the worker and opsctl all import. It depends on pydantic only.
Messages from the app's existing producer lack ``job_id`` and ``schema_version``; they parse
too, and the SQS MessageId becomes the job id.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

JOB_TYPE = "lab_categorization"
SCHEMA_VERSION = 1
PRIORITIES = ("low", "normal", "high")
MAX_TEST_NAME_LENGTH = 200
# SQS counts the body and the message attributes against one 256 KiB limit.
SQS_MAX_MESSAGE_BYTES = 256 * 1024

Priority = Literal["low", "normal", "high"]


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

    test_name: str = Field(min_length=1, max_length=MAX_TEST_NAME_LENGTH)
    test_value: str | None = None
    test_unit: str | None = None
    specimen: str | None = None

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
    job_id: str | None = Field(default=None, min_length=1, max_length=100)
    user_id: int = Field(gt=0)
    document_id: int = Field(gt=0)
    priority: Priority = "normal"
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    test_count: int | None = Field(default=None, ge=1)
    tests: list[LabTest] = Field(min_length=1)

    @model_validator(mode="after")
    def _count_matches(self) -> LabCategorizationJob:
        if self.test_count is None:
            self.test_count = len(self.tests)
        elif self.test_count != len(self.tests):
            raise ValueError(f"test_count is {self.test_count} but {len(self.tests)} tests were sent")
        return self

    def to_body(self) -> str:
        return self.model_dump_json()

    def message_attributes(self) -> dict[str, dict[str, str]]:
        return {
            "JobType": {"DataType": "String", "StringValue": self.job_type},
            "Priority": {"DataType": "String", "StringValue": self.priority},
            "UserId": {"DataType": "Number", "StringValue": str(self.user_id)},
        }


def new_job(user_id: int, document_id: int, tests: list[Any], priority: str = "normal") -> LabCategorizationJob:
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


def decode_job(body: str | bytes, message_id: str) -> LabCategorizationJob:
    """Parse an SQS body into a job. Raises InvalidJobError for anything the worker cannot do.

    Legacy messages (no job_id) take the SQS message id as their job id.
    """
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidJobError("body", f"not JSON ({error})") from None
    if not isinstance(payload, dict):
        raise InvalidJobError("body", "not a JSON object")
    job_type = payload.get("job_type", JOB_TYPE)
    if job_type != JOB_TYPE:
        raise InvalidJobError("job_type", f"unknown job type {job_type!r}")
    version = payload.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidJobError("schema_version", f"unsupported schema version {version!r}")
    try:
        job = LabCategorizationJob.model_validate(payload)
    except ValidationError as error:
        raise InvalidJobError.from_validation(error) from None
    if job.job_id is None:
        job.job_id = message_id
    return job


def message_size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """Bytes SQS counts against its size limit: the body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute.get("StringValue", "").encode())
    return size
