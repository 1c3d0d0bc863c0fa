# -*- test-case-name: tests.engineio.test_server -*-
"""Outgoing Engine.IO packets, encoded once for any number of sessions and both transports."""

from __future__ import annotations

from autobahn.websocket.protocol import PreparedMessage

from ilchat.engineio import packets as P
from ilchat.engineio._internals import prepare_frame

__all__ = ["NOOP_PACKET", "OutgoingPacket", "PING_PACKET"]


class OutgoingPacket:
    """One Engine.IO packet encoded once, for any number of sessions and both transports.

    The websocket frame (Autobahn ``PreparedMessage``, never compressed) and the long-polling text
    are each built at most once, on first use, so a broadcast costs one encoding however many
    sockets receive it.
    """

    __slots__ = ("data", "_polling", "_prepared")

    def __init__(self, packet_type: int, data: str | bytes = "") -> None:
        self.data: str | bytes = P.encode_packet(packet_type, data)
        self._polling: str | None = None
        self._prepared: PreparedMessage | None = None

    @classmethod
    def message(cls, data: str | bytes) -> "OutgoingPacket":
        """A ``MESSAGE`` packet (text or binary)."""
        return cls(P.MESSAGE, data)

    @property
    def polling(self) -> str:
        """The packet as it appears in a long-polling payload."""
        text = self._polling
        if text is None:
            data = self.data
            if isinstance(data, bytes):
                text = P.encode_polling_packet(P.MESSAGE, data)
            else:
                text = data
            self._polling = text
        return text

    @property
    def prepared(self) -> PreparedMessage:
        """The packet as a ready-made websocket frame."""
        msg = self._prepared
        if msg is None:
            data = self.data
            if isinstance(data, bytes):
                msg = prepare_frame(data, True)
            else:
                msg = prepare_frame(data.encode("utf-8"), False)
            self._prepared = msg
        return msg


#: The packets every session sends, encoded once for the process.
NOOP_PACKET = OutgoingPacket(P.NOOP)
PING_PACKET = OutgoingPacket(P.PING)
