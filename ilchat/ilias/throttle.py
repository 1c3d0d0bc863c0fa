# -*- test-case-name: tests.ilias.test_throttle -*-
"""
The message throttle of the ILIAS namespaces (repository chat and On-Screen Chat).

The Node server fans out and stores whatever a socket sends (20,000 messages in 0.18 s were
measured). Each socket gets a token bucket from the network policy (``ilias_message_rate`` per
second, bursts up to ``ilias_message_burst``; generous, so no real user meets it); a message
beyond it is refused before anything is delivered or stored, and the adapter tells the sender in
a form the ILIAS page shows. At most one log line per 10 s and socket, not one per refused message.

The per-address session limit is told the same way: a socket of an address over the limit (the
policy lets a few such sessions through, see ``NetworkPolicy.session_grace``) gets the reason when
it logs in and is disconnected (:func:`connection_limit_refusal`).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

__all__ = ["MessageThrottle", "SYSTEM_SENDER", "connection_limit_refusal", "too_fast_text"]

#: Seconds between two log lines about one socket's refused messages.
LOG_INTERVAL = 10.0

#: The sender of the repository chat's refusal messages: no ILIAS user has id 0.
SYSTEM_SENDER = {"id": 0, "username": "Chat", "profile_picture_visible": False}


def too_fast_text(retry_after: float) -> str:
    """What the sender reads when a message was refused for coming too fast."""
    seconds = max(1, int(retry_after + 0.999))
    return (
        "You are sending messages too fast: this message was not delivered. "
        f"Please wait {seconds} second{'s' if seconds != 1 else ''} and send it again."
    )


def connection_limit_refusal(policy: Any, socket: Any) -> Optional[str]:
    """
    The text for a socket whose address holds more sessions than ``max_connections_per_ip``
    (one of the policy's grace sessions, opened only to be told), or ``None``.
    """
    if policy is None:
        return None
    return policy.connection_limit_refusal(socket.address)


class MessageThrottle:
    """One bucket per socket (kept in ``socket.data``), taken from the policy on first use."""

    _log = Logger()

    def __init__(self, policy: Any, namespace: str, clock: Any) -> None:
        """
        Args:
            policy: the process's ``NetworkPolicy`` (``ilias_message_bucket()``); ``None``
                throttles nothing.
            namespace: named in the log line.
            clock: provides ``seconds()`` (the reactor), for the log interval.
        """
        self.policy = policy
        self._namespace = namespace
        self._clock = clock

    def refused(self, socket: Any) -> Optional[float]:
        """``None`` when C{socket} may send one more message now, else the seconds to wait."""
        if self.policy is None:
            return None
        data = socket.data
        bucket = data.get("ilias_message_bucket")
        if bucket is None:
            bucket = data["ilias_message_bucket"] = self.policy.ilias_message_bucket()
        allowed, retry_after = bucket.consume()
        if allowed:
            return None
        now = self._clock.seconds()
        if now - data.get("ilias_message_logged", -LOG_INTERVAL) >= LOG_INTERVAL:
            data["ilias_message_logged"] = now
            self._log.info(
                "Messages from {sid} on {ns} ({address}) refused: faster than {rate}/s"
                " (burst {burst}); logged at most every 10 s per socket",
                sid=socket.sid,
                ns=self._namespace,
                address=getattr(socket, "address", "?"),
                rate=bucket.rate,
                burst=bucket.burst,
            )
        return retry_after
