# -*- test-case-name: tests.ilias.test_osc -*-
"""
The ILIAS On-Screen Chat adapter: the ``/<name>-im`` Socket.IO namespace and ``UserConfigChange``.

Socket events are checked and handed to L{ilchat.chat.conversations.OnScreenChat}; what it
publishes on the bus (topic ``osc:<name>``) is delivered here to the sockets of this process. Every
socket of a logged-in user sits in the namespace room ``user:<id>``, so one emit reaches all of a
user's tabs and the packet is encoded once for all of them.

A socket acts only as the user it is bound to (``ilchat.ilias.identity``: the ILIAS session of its
handshake, or in ``trust`` mode its first login); a ``login`` for anyone else gets ``shutdown`` and
the socket is disconnected. Names come from ``usr_data.login`` (what ILIAS's page sends for its own
user) wherever the database has the user, not from what a browser claims. A socket's events are
handled one after the other, so nothing overtakes its ``login``.

A refused event (bad arguments, unknown conversation, acting for someone else, before ``login``)
gets a ``refused`` event on that socket only, ``{"event": <name>, "reason": <text>}``, and the same
object as the acknowledgement if the client asked for one. ILIAS's JavaScript ignores both.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ilchat.chat.conversations import OnScreenChat, OscMessageRow, Refused, parse_user_id
from ilchat.chat.history import HistoryWriter
from ilchat.ilias.identity import Identity, in_order, shut_down
from ilchat.ilias.throttle import MessageThrottle, connection_limit_refusal, too_fast_text
from ilchat.journal import client_journal
from ilchat.jsonutil import JSONError, loads
from ilchat.logs import RepeatedLog
from ilchat.socketio import ConnectionRefused
from ilchat.web.errors import BadRequest

__all__ = ["OnScreenChatComponent", "parse_config_change"]

#: Longest ``UserConfigChange`` ``message`` accepted (characters of JSON).
MAX_CONFIG_CHANGE = 1_000_000


def _user_room(user_id: int) -> str:
    return f"user:{user_id}"


def parse_config_change(raw: Optional[str]) -> Dict[int, bool]:
    """
    Read ``UserConfigChange``'s ``message``: ``{"<usr_id>": {"acceptsMessages": <bool>}, ...}``.

    A missing ``acceptsMessages`` means false, as ``Boolean(undefined)`` does in ILIAS.

    Raises:
        ValueError: with a text for the 400 answer.
    """
    if raw is None:
        raise ValueError("missing query parameter: message")
    if len(raw) > MAX_CONFIG_CHANGE:
        raise ValueError("message too long")
    try:
        users = loads(raw)
    except JSONError as e:
        raise ValueError(f"message is not valid JSON: {e}") from None
    if not isinstance(users, dict):
        raise ValueError("message must be a JSON object keyed by user id")
    changes: Dict[int, bool] = {}
    for key, value in users.items():
        try:
            user_id = parse_user_id(key)
        except Refused:
            raise ValueError(f"not a user id: {key!r}") from None
        if not isinstance(value, dict):
            raise ValueError(f"settings of user {key} must be an object")
        changes[user_id] = bool(value.get("acceptsMessages"))
    return changes


class OnScreenChatComponent:
    """
    The On-Screen Chat of one ILIAS client, as a service component (``start``/``stop``).

    Args:
        client: the ``ilchat.service.ClientContext`` (config, store, bus, reactor, socketio, routes).
    """

    _log = Logger()

    def __init__(self, client: Any) -> None:
        self.client = client
        self.name = client.config.name
        self.namespace_name = f"/{self.name}-im"
        self.journal = client_journal(client, "osc")
        store = client.store
        messages = HistoryWriter(
            client.reactor, store.add_osc_messages, is_refused=store.is_refused_data,
            journal=self.journal, row_type=OscMessageRow, what="On-Screen Chat messages",
            describe="the database of {}".format(self.name),
        )
        self.chat = OnScreenChat(self.name, store, client.bus, client.reactor, messages=messages)
        self.identity = Identity(client.config, client.store, client.reactor)
        self._namespace: Any = None
        self._sockets: Dict[str, Any] = {}
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._repeats = RepeatedLog(self._log, client.reactor)
        self._throttle = MessageThrottle(getattr(client, "policy", None), self.namespace_name, client.reactor)

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if getattr(self.client.config, "standalone", None) is not None:
            # The standalone chat has no ILIAS users: an On-Screen Chat namespace there would only
            # be an unauthenticated side channel around the standalone chat's own policy.
            self._log.info("{name}: standalone client, no On-Screen Chat", name=self.name)
            return
        self.journal.open()
        replayed = self.chat.messages.replay()
        if replayed:
            self._log.warn(
                "{count} On-Screen Chat messages of {name} found in the journal {path} (the last "
                "run ended before the database had them); writing them first",
                count=replayed, name=self.name, path=self.journal.path,
            )
        await self.chat.start()
        self._unsubscribe = self.client.bus.subscribe(self.chat.topic, self._deliver)
        ns = self._namespace = self.client.socketio.namespace(self.namespace_name)
        ns.on_connect = self._on_connect
        ns.on_disconnect = self._on_disconnect
        handlers = {
            "login": self.on_login,
            "conversations": self.on_conversations,
            "conversation": self.on_conversation,
            "addUser": self.on_addUser,
            "removeUser": self.on_removeUser,
            "message": self.on_message,
            "history": self.on_history,
            "activity": self.on_activity,
            "closeConversation": self.on_closeConversation,
            "userStartedTyping": self.on_userStartedTyping,
            "userStoppedTyping": self.on_userStoppedTyping,
        }
        for event, handler in handlers.items():
            ns.on(event, self._guard(event, handler))
        _register_route(self.client.routes, "UserConfigChange", self.user_config_change)

    async def stop(self) -> None:
        if self._namespace is None:
            await self.journal.close()
            return
        self.identity.stop()
        if "UserConfigChange" in self.client.routes:
            self.client.routes.unregister("UserConfigChange")
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._repeats.flush()
        await self.chat.stop()
        await self.journal.close()

    def live_conversation_ids(self) -> set:
        """For the daily purge: the conversations it must keep."""
        return self.chat.live_conversation_ids()

    # delivery ----------------------------------------------------------------------------------

    def _deliver(self, envelope: Dict[str, Any]) -> None:
        """Bus subscriber: emit each delivery to the sockets of this process."""
        message = envelope["event"]
        ns = self._namespace
        if ns is None:
            return
        for delivery in message.get("deliveries", ()):
            event, payload = delivery["event"], delivery["payload"]
            connection = delivery.get("connection")
            if connection is not None:
                socket = self._sockets.get(connection)
                if socket is not None:
                    socket.emit(event, payload)
            elif delivery.get("to"):
                ns.emit(event, payload, room=[_user_room(u) for u in delivery["to"]])

    # socket events -----------------------------------------------------------------------------

    def _on_connect(self, socket: Any, auth: Any) -> None:
        too_many = connection_limit_refusal(self._throttle.policy, socket)
        if too_many is not None:
            # The On-Screen Chat has no place on the page for it: the namespace is refused
            # (CONNECT_ERROR with the reason, after which socket.io-client does not retry).
            raise ConnectionRefused(too_many)
        self._sockets[socket.sid] = socket

    def _on_disconnect(self, socket: Any, reason: Any) -> None:
        self._sockets.pop(socket.sid, None)
        participant = self.chat.disconnect(socket.sid)
        if participant is not None:
            self._log.debug(
                "OSC {ns}: user {id} socket gone, online={online}",
                ns=self.namespace_name,
                id=participant.id,
                online=participant.online,
            )

    def _guard(self, event: str, handler: Callable[..., Any]) -> Callable[..., Deferred]:
        """
        Run C{handler} so that a refusal or a bug costs this one request only.

        The result is the acknowledgement: nothing on success, ``{"event", "reason"}`` on refusal.
        """

        def refuse(socket: Any, reason: str) -> Dict[str, str]:
            answer = {"event": event, "reason": reason}
            socket.emit("refused", answer)
            return answer

        def run(socket: Any, *args: Any) -> Deferred:
            self._sockets.setdefault(socket.sid, socket)
            d = in_order(socket, handler, socket, *args)

            def failed(failure: Any) -> Dict[str, str]:
                if failure.check(Refused):
                    self._repeats.info(
                        "OSC {ns}: {event} refused for {sid}: {reason}",
                        ns=self.namespace_name,
                        event=event,
                        sid=socket.sid,
                        reason=str(failure.value),
                    )
                    return refuse(socket, str(failure.value))
                self._log.failure(
                    "OSC {ns}: {event} failed", failure, ns=self.namespace_name, event=event
                )
                return refuse(socket, "internal error")

            d.addCallbacks(lambda _: None, failed)
            return d

        return run

    async def on_login(self, socket: Any, user_id: Any = None, name: Any = None, *_: Any) -> None:
        """
        ``login(id, name)``: only as the socket's bound user (``ilchat.ilias.identity``), under
        the name ILIAS gives it (``usr_data.login``); anything else gets ``shutdown`` and the
        socket is disconnected.
        """
        uid = parse_user_id(user_id)
        if await self.identity.bind(socket, uid) is not None:
            shut_down(socket)
            return
        names = await self.chat.known_names([uid])
        if not socket.connected:
            return
        participant = self.chat.login(socket.sid, uid, names.get(uid, name))
        socket.join(_user_room(participant.id))
        socket.emit("login", participant.as_json())
        await self.chat.list_conversations(socket.sid)

    async def on_conversations(self, socket: Any, *_: Any) -> None:
        await self.chat.list_conversations(socket.sid)

    async def on_conversation(self, socket: Any, participants: Any = None, *_: Any) -> None:
        await self.chat.open_conversation(socket.sid, participants)

    async def on_addUser(self, socket: Any, conversation_id: Any = None, user_id: Any = None, name: Any = None, *_: Any) -> None:
        await self.chat.add_user(socket.sid, conversation_id, user_id, name)

    async def on_removeUser(self, socket: Any, conversation_id: Any = None, user_id: Any = None, name: Any = None, *_: Any) -> None:
        await self.chat.remove_user(socket.sid, conversation_id, user_id, name)

    async def on_message(self, socket: Any, conversation_id: Any = None, user_id: Any = None, text: Any = None, *_: Any) -> None:
        retry_after = self._throttle.refused(socket)
        if retry_after is not None:
            # As a Refused would answer, but logged once per burst by the throttle, not per message.
            socket.emit("refused", {"event": "message", "reason": too_fast_text(retry_after)})
            return
        await self.chat.send_message(socket.sid, conversation_id, user_id, text)

    async def on_history(self, socket: Any, conversation_id: Any = None, oldest: Any = None, reverse: Any = False, *_: Any) -> None:
        await self.chat.history(socket.sid, conversation_id, oldest, reverse)

    async def on_activity(self, socket: Any, conversation_id: Any = None, user_id: Any = None, timestamp: Any = None, *_: Any) -> None:
        await self.chat.track_activity(socket.sid, conversation_id, user_id, timestamp)

    async def on_closeConversation(self, socket: Any, conversation_id: Any = None, user_id: Any = None, *_: Any) -> None:
        await self.chat.close_conversation(socket.sid, conversation_id, user_id)

    async def on_userStartedTyping(self, socket: Any, conversation_id: Any = None, user_id: Any = None, *_: Any) -> None:
        self.chat.typing(socket.sid, conversation_id, user_id, started=True)

    async def on_userStoppedTyping(self, socket: Any, conversation_id: Any = None, user_id: Any = None, *_: Any) -> None:
        self.chat.typing(socket.sid, conversation_id, user_id, started=False)

    # backend -----------------------------------------------------------------------------------

    def user_config_change(self, client: Any, request: Any, args: list) -> Dict[str, int]:
        """
        ``GET /backend/UserConfigChange/<name>?message=<json>``: PHP saved a user's chat settings.

        Unlike ILIAS, a missing or broken ``message`` is a 400 JSON answer, not a crash.
        """
        raw = request.args.get(b"message", [None])[0]
        if raw is not None:
            raw = raw.decode("utf-8", "replace")
        try:
            changes = parse_config_change(raw)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        self.chat.set_acceptance(changes)
        self._log.info(
            "OSC {ns}: acceptsMessages changed for {users}", ns=self.namespace_name, users=changes
        )
        return {"status": 200}


def _register_route(routes: Any, action: str, handler: Callable[..., Any]) -> None:
    """Register a backend action that takes no path segment after ``/<name>``."""
    routes.register(action, handler, segments=(0,))
