"""Errors opsctl reports: one line with a hint, never a traceback.

Every failure that reaches the user goes through :func:`describe`, called from one place
(``opsctl.cli.OpsGroup.main``).
"""

from __future__ import annotations

import typer
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)
from botocore.parsers import ResponseParserError

try:  # Typer 0.2x ships its own copy of click
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older Typer on top of click
    from click.exceptions import NoArgsIsHelpError, UsageError  # noqa: F401

# Error codes an endpoint answers with when it does not implement an action (moto answers 500).
UNSUPPORTED_CODES = {"500", "501", "404", "InternalFailure", "InvalidAction", "UnknownOperationException",
                     "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "NotImplemented",
                     "NotImplementedError"}


# What a call to an API the endpoint may lack can raise (moto answers an HTML 500 for some protocols).
AWS_ERRORS = (ClientError, BotoCoreError, ResponseParserError)


class OpsError(Exception):
    """A failed operation or check: printed as one line, exit code ``code`` (1 by default)."""

    def __init__(self, message: str, hint: str | None = None, code: int = 1):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


# The platform's queue policy lets only the API's role and the stack's operatorRoleArns send.
SEND_DENIED_HINT = ("the queue policy lets only the API role and the stack's operatorRoleArns send: add your role "
                    "to operatorRoleArns (Pulumi config) and run opsctl deploy")
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied"}


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def is_unsupported(error: BaseException) -> bool:
    """True when the endpoint lacks the API (an emulator, an old region), not when access is denied."""
    if isinstance(error, ResponseParserError):
        return True
    return isinstance(error, ClientError) and error_code(error) in UNSUPPORTED_CODES


def _first_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def describe(error: BaseException) -> tuple[str, str | None, int]:
    """(message, hint, exit code) for anything that can go wrong in a command."""
    if isinstance(error, OpsError):
        return error.message, error.hint, error.code
    if isinstance(error, UsageError):
        command = error.ctx.command_path if error.ctx else "opsctl"
        return _first_line(error.format_message()), f"see '{command} --help'", 2
    if isinstance(error, typer.TyperException):
        return _first_line(error.format_message()), None, getattr(error, "exit_code", 1)
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return ("no AWS credentials found",
                "pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run 'aws sso login'", 1)
    if isinstance(error, (SSOTokenLoadError, TokenRetrievalError, UnauthorizedSSOTokenError)):
        return "the AWS SSO session has expired or is missing", "run 'aws sso login --profile <profile>'", 1
    if isinstance(error, ProfileNotFound):
        return _first_line(str(error)), "check --profile / AWS_PROFILE against ~/.aws/config", 1
    if isinstance(error, NoRegionError):
        return "no AWS region configured", "pass --region or set AWS_REGION", 1
    if isinstance(error, EndpointConnectionError):
        return _first_line(str(error)), "check the network, --region and AWS_ENDPOINT_URL", 1
    if isinstance(error, ClientError):
        code = error_code(error)
        message = error.response.get("Error", {}).get("Message") or str(error)
        operation = getattr(error, "operation_name", "")
        hint = None
        if code in DENIED_CODES | {"UnauthorizedOperation"}:
            hint = "your AWS identity lacks this permission; check --profile"
        elif code in {"ExpiredToken", "ExpiredTokenException", "RequestExpired"}:
            hint = "refresh your credentials (aws sso login)"
        elif code in {"InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch"}:
            hint = "the credentials are not valid for this account; check --profile"
        elif code in {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
            hint = "check --env and the queue URL (flag, ML_WORKER_* env var or SSM)"
        elif is_unsupported(error):
            hint = "this endpoint does not support the operation"
        return _first_line(f"{operation} failed: {code}: {message}" if operation else f"{code}: {message}"), hint, 1
    if isinstance(error, ResponseParserError):
        return _first_line(str(error))[:160], "the endpoint gave an answer botocore cannot parse (AWS_ENDPOINT_URL?)", 1
    if isinstance(error, BotoCoreError):
        return _first_line(str(error)), "check your AWS configuration (--profile, --region)", 1
    message = _first_line(f"unexpected error: {type(error).__name__}: {error}")
    return message, "rerun with OPSCTL_DEBUG=1 for the traceback", 1
