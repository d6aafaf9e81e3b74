"""Liveness through a heartbeat file: the loop touches it, ``python -m worker healthcheck`` reads it.

The image's HEALTHCHECK runs the check; a loop stuck for longer than the allowed age (one long
poll plus one visibility timeout, by default) makes the task unhealthy and ECS replaces it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class HealthFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def touch(self) -> None:
        """Record progress now (write then rename, so a reader never sees a partial file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(f"{time.time():.3f}\n")
        os.replace(temporary, self.path)

    def age(self) -> float | None:
        """Seconds since the last progress, or None when the loop never reported any."""
        try:
            return max(0.0, time.time() - float(self.path.read_text().strip()))
        except (OSError, ValueError):
            return None

    def check(self, max_age: float) -> tuple[bool, str]:
        age = self.age()
        if age is None:
            return False, f"no heartbeat at {self.path}: the worker loop has not started"
        if age > max_age:
            return False, f"last progress {age:.0f} s ago (allowed {max_age:.0f} s)"
        return True, f"last progress {age:.1f} s ago"

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
