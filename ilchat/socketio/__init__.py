"""Socket.IO v5 server on Engine.IO v4: namespaces, rooms, events, acks.  Knows nothing of ILIAS.

See :mod:`ilchat.socketio.server` for the application API.
"""

from ilchat.socketio.server import ConnectionRefused, Namespace, Socket, SocketIOServer

__all__ = ["SocketIOServer", "Namespace", "Socket", "ConnectionRefused"]
