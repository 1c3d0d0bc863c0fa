# -*- test-case-name: tests.ilias.test_osc -*-
"""
The ILIAS On-Screen Chat adapter: the ``/<name>-im`` Socket.IO namespace and ``UserConfigChange``.

Socket events are checked and handed to L{ilchat.chat.conversations.OnScreenChat}. The events
it publishes on the bus (topic ``osc:<name>``, L{ilchat.chat.conversation_events}) are rendered
here into ILIAS's events and payloads (spec §3.4: ``conversation.json()``, camelCase message keys)
and emitted to the sockets of this process; what it returns for one request (the conversation
list, a history page) goes to the asking socket. Every socket of a logged-in user sits in the
namespace room ``user:<id>``, so one emit reaches all of a user's tabs and the packet is encoded
once for all of them.

A socket acts only as the user it is bound to (``ilchat.ilias.identity``: the ILIAS session of its
handshake, or in ``trust`` mode its first login); a ``login`` for anyone else gets ``shutdown`` and
the socket is disconnected. Names come from ``usr_data.login`` (what ILIAS's page sends for its own
user) wherever the database has the user, not from what a browser claims. A socket's events are
handled one after the other, so nothing overtakes its ``login``.

A refused event (bad arguments, unknown conversation, acting for someone else, before ``login``)
gets a ``refused`` event on that socket only, ``{"event": <name>, "reason": <text>}``, and the same
object as the acknowledgement if the client asked for one. ILIAS's JavaScript ignores both.

For ILIAS 8 and 9, whose page inserts message texts as HTML, a message's text is HTML-escaped as
it comes in (client.cfg ``escape_messages``, L{ilchat.ilias.escaping}), as their Node server did:
it is sent, stored in ``osc_messages`` and given back in ``history`` and ``latestMessage`` that
way. ILIAS 10 escapes in the page and gets the text as written.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ilchat.chat import conversation_events as events
from ilchat.chat.conversation_model import ConversationView, OscMessageRow, Refused, parse_user_id
from ilchat.chat.conversations import OnScreenChat
from ilchat.chat.history import HistoryWriter
from ilchat.ilias.escaping import escape_messages, html_escaped
from ilchat.ilias.identity import Identity, in_order, shut_down
from ilchat.ilias.throttle import MessageThrottle, connection_limit_refusal, too_fast_text
from ilchat.journal import client_journal
from ilchat.jsonutil import JSONError, loads
from ilchat.logs import RepeatedLog
from ilchat.socketio import ConnectionRefused
from ilchat.web.errors import BadRequest

__all__ = [
    "OnScreenChatComponent", "conversation_json", "message_json", "parse_config_change", "stored_message_json",
]

#: Longest ``UserConfigChange`` ``message`` accepted (characters of JSON).
MAX_CONFIG_CHANGE = 1_000_000


#: A stored message's keys (``osc_messages`` columns), in ILIAS's order.
_MESSAGE_COLUMNS = ("id", "conversation_id", "user_id", "message", "timestamp")


def _user_room(user_id: int) -> str:
    return f"user:{user_id}"


def stored_message_json(message: Mapping[str, Any]) -> Dict[str, Any]:
    """A stored message as ILIAS sends history rows and ``latestMessage``: columns plus camelCase."""
    row = {column: message[column] for column in _MESSAGE_COLUMNS}
    row["userId"] = message["user_id"]
    row["conversationId"] = message["conversation_id"]
    return row


def message_json(message: Mapping[str, Any]) -> Dict[str, Any]:
    """ILIAS's ``message`` payload: ``{conversationId, userId, message, timestamp, id}``."""
    return {
        "conversationId": message["conversation_id"],
        "userId": message["user_id"],
        "message": message["message"],
        "timestamp": message["timestamp"],
        "id": message["id"],
    }


def conversation_json(conversation: Mapping[str, Any], unread: int) -> Dict[str, Any]:
    """ILIAS's ``conversation.json()`` for one receiving participant, from a conversation snapshot."""
    latest = conversation["latest_message"]
    return {
        "id": conversation["id"],
        "participants": [{"id": p["id"], "name": p["name"]} for p in conversation["participants"]],
        "latestMessage": stored_message_json(latest) if latest is not None else None,
        "numNewMessages": unread,
        "isGroup": conversation["is_group"],
    }


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
        #: Message texts HTML-escaped as they come in (ILIAS 8 and 9 pages): decided at start.
        self.escape_messages = False
        self._namespace: Any = None
        self._sockets: Dict[str, Any] = {}
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._repeats = RepeatedLog(self._log, client.reactor)
        self._renderers: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], None]] = {
            events.CONVERSATION_OPENED: self._on_conversation_opened,
            events.PARTICIPANT_ADDED: self._on_participant_added,
            events.PARTICIPANT_REMOVED: self._on_participant_removed,
            events.MESSAGE_POSTED: self._on_message_posted,
            events.MESSAGE_WITHHELD: self._on_message_withheld,
            events.TYPING: self._on_typing,
            # ACCEPTANCE_CHANGED reaches no browser: the domain applies it.
        }
        self._throttle = MessageThrottle(getattr(client, "policy", None), self.namespace_name, client.reactor)

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if getattr(self.client.config, "standalone", None) is not None:
            # The standalone chat has no ILIAS users: an On-Screen Chat namespace there would only
            # be an unauthenticated side channel around the standalone chat's own policy.
            self._log.info("{name}: standalone client, no On-Screen Chat", name=self.name)
            return
        self.escape_messages = await escape_messages(self.client.config, self.client.store,
                                                     f"{self.name} On-Screen Chat")
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

    # delivery ----------------------------------------------------------------------------------

    def _deliver(self, envelope: Dict[str, Any]) -> None:
        """Bus subscriber: render an On-Screen Chat event for the sockets of this process."""
        if self._namespace is None:
            return
        event = envelope["event"]
        render = self._renderers.get(event.get("type"))
        if render is not None:
            render(event, envelope)

    def _emit(self, user_ids: Sequence[int], name: str, payload: Any) -> None:
        """Emit to every socket of these users on this process (encoded once for all)."""
        if user_ids:
            self._namespace.emit(name, payload, room=[_user_room(u) for u in user_ids])

    def _emit_conversation(self, recipients: List[Dict[str, int]], name: str, conversation: Dict[str, Any]) -> None:
        for recipient in recipients:
            self._emit([recipient["id"]], name, conversation_json(conversation, recipient["unread"]))

    def _on_conversation_opened(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        self._emit_conversation(event["recipients"], "conversation-init", event["conversation"])

    def _on_participant_added(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        # ILIAS: ``conversation`` to all of the actor's tabs, then ``addUser`` to the asking one.
        self._emit_conversation(event["recipients"], "conversation", event["conversation"])
        socket = self._sockets.get(event["connection"])
        if socket is not None and envelope.get("origin") == self.client.bus.instance:
            unread = next((r["unread"] for r in event["recipients"] if r["id"] == event["actor"]), 0)
            socket.emit("addUser", conversation_json(event["conversation"], unread))

    def _on_participant_removed(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        conversation = event["conversation"]
        self._emit([event["user"]["id"]], "removeUser", conversation_json(conversation, event["unread"]))
        self._emit_conversation(event["recipients"], "conversation", conversation)

    def _on_message_posted(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        # The conversation updates first, then the message, as ILIAS does.
        recipients = event["recipients"]
        self._emit_conversation(recipients, "conversation", event["conversation"])
        self._emit([r["id"] for r in recipients], "message", message_json(event["message"]))
        if event["ignored"]:
            suppressed = dict(message_json(event["message"]), ignoredParticipants={str(i): i for i in event["ignored"]})
            self._emit([event["sender"]["id"]], "participantsSuppressedMessages", suppressed)

    def _on_message_withheld(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        self._emit([event["sender"]["id"]], "senderSuppressesMessages", message_json(event["message"]))

    def _on_typing(self, event: Dict[str, Any], envelope: Dict[str, Any]) -> None:
        name = "userStartedTyping" if event["started"] else "userStoppedTyping"
        payload = {"conversation": conversation_json(event["conversation"], 0), "participant": event["user"]}
        self._emit(event["to"], name, payload)

    @staticmethod
    def _send_conversations(socket: Any, views: List[ConversationView]) -> None:
        """The answer to ``conversations`` (and ``login``), for the asking socket."""
        for view in views:
            socket.emit("conversation", conversation_json(view.conversation, view.unread))

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
        socket.emit("login", participant.as_dict())
        self._send_conversations(socket, await self.chat.list_conversations(socket.sid))

    async def on_conversations(self, socket: Any, *_: Any) -> None:
        self._send_conversations(socket, await self.chat.list_conversations(socket.sid))

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
        if self.escape_messages and isinstance(text, str):
            text = html_escaped(text)
        await self.chat.send_message(socket.sid, conversation_id, user_id, text)

    async def on_history(self, socket: Any, conversation_id: Any = None, oldest: Any = None, reverse: Any = False, *_: Any) -> None:
        page = await self.chat.history(socket.sid, conversation_id, oldest, reverse)
        payload = conversation_json(page.view.conversation, page.view.unread)
        payload["messages"] = [stored_message_json(m) for m in page.messages]
        payload["reverseSorting"] = page.reverse
        payload["oldestMessageTimestamp"] = page.oldest
        socket.emit("history", payload)

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
