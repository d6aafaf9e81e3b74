"""ECS task scale-in protection: on while the worker is busy, off when it is idle.

The ECS agent serves ``$ECS_AGENT_URI/task-protection/v1/state``; a PUT of
``{"ProtectionEnabled": true, "ExpiresInMinutes": N}`` keeps scale-in from stopping the task
in the middle of a batch. The expiry is longer than the visibility timeout and is renewed while
the worker stays busy; it lapses by itself if the worker dies. Off ECS (no ECS_AGENT_URI) this
does nothing. A failure is logged and never stops the work.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.request

log = logging.getLogger(__name__)

PATH = "/task-protection/v1/state"


class TaskProtection:
    def __init__(self, agent_uri: str | None, visibility_timeout: int = 300, timeout: float = 3.0):
        self.agent_uri = agent_uri.rstrip("/") if agent_uri else None
        # Longer than one visibility timeout, in whole minutes, with room for a slow batch.
        self.expires_minutes = max(5, math.ceil(visibility_timeout / 60) * 2)
        self.timeout = timeout
        self.enabled = False
        self._enabled_at = 0.0
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.agent_uri is not None

    def busy(self) -> None:
        """Protect the task; renew when half the expiry has passed."""
        if not self.active:
            return
        with self._lock:
            renew_after = self.expires_minutes * 60 / 2
            if self.enabled and time.monotonic() - self._enabled_at < renew_after:
                return
            if self._put({"ProtectionEnabled": True, "ExpiresInMinutes": self.expires_minutes}):
                self.enabled = True
                self._enabled_at = time.monotonic()

    def idle(self) -> None:
        """Let scale-in stop the task again."""
        if not self.active:
            return
        with self._lock:
            if self.enabled and self._put({"ProtectionEnabled": False}):
                self.enabled = False

    def _put(self, body: dict) -> bool:
        request = urllib.request.Request(self.agent_uri + PATH, data=json.dumps(body).encode(), method="PUT",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read() or b"{}")
        except Exception as error:  # any failure: log it and keep working
            log.warning("task protection update failed", extra={"request": body, "error": repr(error)})
            return False
        if "failure" in reply or "error" in reply:
            log.warning("task protection refused", extra={"request": body, "reply": reply})
            return False
        log.info("task protection %s", "on" if body["ProtectionEnabled"] else "off",
                 extra={"expires_minutes": body.get("ExpiresInMinutes")})
        return True
