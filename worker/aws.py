"""boto3 clients built the standard way, shared by the producer, the worker and opsctl.

Nothing here overrides the endpoint: AWS_ENDPOINT_URL, AWS_PROFILE and AWS_REGION work as
everywhere in the AWS ecosystem. Retries use botocore's standard mode.
"""

from __future__ import annotations

import boto3
from botocore.config import Config

# Without any configured region boto3 refuses to build a client; us-east-1 is its usual fallback.
FALLBACK_REGION = "us-east-1"
RETRY_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=30)


def session(profile: str | None = None, region: str | None = None) -> boto3.session.Session:
    chosen = boto3.session.Session(profile_name=profile, region_name=region)
    if chosen.region_name is None:
        chosen = boto3.session.Session(profile_name=profile, region_name=FALLBACK_REGION)
    return chosen


def client(service: str, profile: str | None = None, region: str | None = None, config: Config | None = None):
    return session(profile, region).client(service, config=RETRY_CONFIG.merge(config) if config else RETRY_CONFIG)

