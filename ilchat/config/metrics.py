"""server.cfg ``metrics``: where Prometheus scrapes ``/metrics``."""

from __future__ import annotations

from typing import Optional

import attrs

from ilchat.config.reader import Reader, integer, read_settings, text


@attrs.frozen
class MetricsConfig:
    """The optional ``metrics`` section: where Prometheus scrapes ``/metrics`` (off when absent)."""

    address: str = text("127.0.0.1", allow_empty=False)
    # Port 0 takes any free port (tests).
    port: int = integer(9464, minimum=0, maximum=65535)
    #: A Twisted endpoint description to listen on instead of address/port.
    listen: Optional[str] = text(None, allow_empty=False)


def parse_metrics(server: Reader) -> Optional[MetricsConfig]:
    """The ``metrics`` section, or ``None`` when server.cfg has none."""
    if not server.has("metrics"):
        return None
    return read_settings(MetricsConfig, server.section("metrics"))


__all__ = ["MetricsConfig", "parse_metrics"]
