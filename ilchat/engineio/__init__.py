"""Engine.IO protocol v4 server: HTTP long-polling on twisted.web, websocket on Autobahn.

Knows nothing of Socket.IO or ILIAS.  See :mod:`ilchat.engineio.server`.
"""

from ilchat.engineio.server import EngineIOServer, EngineIOSession, OutgoingPacket

__all__ = ["EngineIOServer", "EngineIOSession", "OutgoingPacket"]
