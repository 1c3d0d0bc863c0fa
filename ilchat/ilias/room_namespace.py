# -*- test-case-name: tests.ilias.test_repository -*-
"""
The Socket.IO namespace ``/<name>`` of a room chat: socket events in, room events out.

L{RoomNamespace} is what the ILIAS repository chat (L{ilchat.ilias.repository}) and the
standalone chat (L{ilchat.standalone.chat}) have in common, as both pages speak the ILIAS
repository chat's events:

* socket events (``enterRoom``, ``message``, ``userStartedTyping``, ``userStoppedTyping``,
  disconnect) are checked here and handed to the domain (L{ilchat.chat.rooms.ChatRooms}), with
  the socket id as the connection id; ``login`` is each variant's own (``on_login``), which
  calls L{RoomNamespace.logged_in} once the domain accepted the socket;
* the domain's events on ``room:<name>`` are rendered by a L{RoomRenderer} for the sockets of
  this process (a room-wide event is one ``ns.emit(..., room="<id>_0")``, encoded once);
* the backend actions PHP calls (spec §2.4, §6) in both the ILIAS 9+ form and the ILIAS 8 form
  with the extra ``subRoomId`` segment, plus ILIAS 8's ``DeletePrivateRoom``.

ILIAS 8 private rooms (``subRoomId`` > 0; removed in ILIAS 9) are on when client.cfg
``private_rooms`` says so, or by default when the database has ILIAS 8's tables
(``store.has_private_rooms()``). A private room is a domain room keyed by
L{ilchat.chat.model.room_key}: the actions and socket events (``enterRoom(roomId, subRoomId)``,
``message(data, roomId, subRoomId)``, typing with ``(roomId, subRoomId)``) address it with both
ids, its open rows of ``chatroom_prooms`` are preloaded, messages (and, as ILIAS 8 did, the
``connect`` and ``disconnected`` notices) are stored with ``chatroom_history.sub_room``, and a user whose grace expired has their ``chatroom_psessions``
ended (an emptied private room is marked closed). Off, a ``subRoomId`` other than 0 is refused
(404 for an action), as ILIAS 9 and 10 never send one.

Message texts are HTML-escaped, sent and stored, when the page inserts them as HTML (ILIAS 8 and
9, L{ilchat.ilias.escaping}): L{RoomNamespace.escape_mode} decides at start, never for the
standalone page, which writes texts with ``textContent``.

Where ilchat differs from the Node server on purpose (docs/design.rst): ``enterRoom`` enters only
rooms PHP admitted the user to (a kick or ban holds until PHP admits them again); whisper targets
are room members found by id; unknown rooms or users in backend actions are a 404 JSON answer
instead of a crash. ``Kick`` and ``Ban`` still answer ``{"success":true}`` for a user who is not
in the chat (PHP writes its ban/kick only after a successful answer). Refused socket events are
logged and otherwise ignored, as the ILIAS JavaScript expects no answer; the exceptions are a
message that does not fit ``chatroom_history.message`` or comes too fast, which the sender alone
is told about by a message from "Chat" (a ``notice`` would show "-key-": ILIAS's page translates a
notice's ``content`` with its own language entries and has none for these), and an ``enterRoom``
into a room the user is not admitted to, which each variant answers in its own way
(L{RoomNamespace.not_admitted}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from ilchat.chat.events import member_info
from ilchat.chat.model import room_key, room_parts
from ilchat.chat.history import HistoryRow, HistoryWriter
from ilchat.chat.rooms import (
    DISCONNECT_GRACE,
    ChatError,
    ChatRooms,
    ContentTooLong,
    NotInRoom,
    UnknownRoom,
    UnknownUser,
)
from ilchat.ilias.identity import in_order
from ilchat.ilias.escaping import html_escaped, html_unescaped
from ilchat.ilias.throttle import SYSTEM_SENDER, MessageThrottle, too_fast_text
from ilchat.ilias.rendering import (
    RoomRenderer,
    envelope_for,
    ilias_user,
    room_name,
    stored_message,
    stored_payload,
)
from ilchat.journal import client_journal
from ilchat.logs import RepeatedLog
from ilchat.store import StoreError
from ilchat.web.errors import BadRequest, NotFound

__all__ = ["RoomNamespace", "parse_id", "rooms_body", "too_long_text"]


def parse_id(value: Any, what: str = "id") -> int:
    """
    An ILIAS id from a URL segment or an event argument: an int, or a string of digits.

    Raises:
        ValueError: anything else (booleans, floats, text).
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text and (text.isdigit() or (text[0] == "-" and text[1:].isdigit())) and len(text) < 20:
            return int(text)
    raise ValueError(f"{what} must be a number, not {value!r}")


def too_long_text(length: int, fits: Optional[int]) -> str:
    """
    What the sender reads when a message does not fit ``chatroom_history.message`` (ILIAS's text
    field of 4,000 characters, holding the message's JSON): ILIAS's page has no language entry for
    it, so it comes as a message from "Chat", in English like the log.
    """
    limit = f" At most {fits:,} characters fit." if fits is not None else ""
    return (
        f"Your message of {length:,} characters is too long for the chat history: it was not"
        f" delivered.{limit} Please send it in several shorter messages."
    )


def _url_id(value: str, what: str) -> int:
    try:
        return parse_id(value, what)
    except ValueError as e:
        raise BadRequest(str(e))


class RoomNamespace:
    """
    The room chat namespace of one client, as a service component (``start``/``stop``).

    Args:
        client: the ``ilchat.service.ClientContext``.
        grace: the disconnect grace in seconds (15 as in ILIAS; tests may shorten it).
    """

    _log = Logger()

    ACTIONS = (
        "Connect",
        "CreatePrivateRoom",
        "DeletePrivateRoom",
        "EnterPrivateRoom",
        "LeavePrivateRoom",
        "InvitePrivateRoom",
        "ClearMessages",
        "Kick",
        "Ban",
        "GetRooms",
        "Post",
    )

    def __init__(self, client: Any, grace: float = DISCONNECT_GRACE) -> None:
        self.client = client
        self.name = client.config.name
        self.store = client.store
        self.reactor = client.reactor
        self.journal = client_journal(client, "history")
        self.history = HistoryWriter(
            client.reactor,
            self._write_history,
            is_refused=self.store.is_refused_data,
            journal=self.journal,
            allocate_ids=self.store.next_history_ids,
            describe="the database of {}".format(self.name),
        )
        self.chat = ChatRooms(
            self.name,
            client.bus,
            client.reactor,
            on_member_gone=self._member_gone,
            grace=grace,
            history=self.history,
            stored_format=self._stored_message,
        )
        #: ILIAS 8 private rooms (``subRoomId``): decided at start (see the module docstring).
        self.private_rooms = False
        #: Message texts HTML-escaped (ILIAS 8 and 9 pages): decided at start.
        self.escape_messages = False
        self.renderer = RoomRenderer(client.reactor, instance=self.chat.origin)
        self.namespace: Any = None
        self._throttle = MessageThrottle(getattr(client, "policy", None), "/" + self.name, client.reactor)
        self._sockets: Dict[str, Any] = {}
        self._unsubscribe: Optional[Any] = None
        self._unresumed: Optional[Any] = None
        self._ungone: Optional[Any] = None
        self._registered: List[str] = []
        # A client repeating a refused event thousands of times costs two log lines, not thousands.
        self._repeats = RepeatedLog(self._log, client.reactor)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """
        Queue what the history journal holds from the last run, preload the rooms, then serve the
        namespace, the bus topic and the actions.
        """
        # First: the journal's rows are written in this mode (their sub_room too).
        self.private_rooms = self.renderer.private_rooms = await self._private_rooms_mode()
        self.escape_messages = self.renderer.escape_messages = await self.escape_mode()
        # ILIAS 8 also stored the connect and disconnected notices.
        self.renderer.notice_history = self._store_notice if self.private_rooms else None
        self.journal.open()
        replayed = self.history.replay()
        if replayed:
            self._log.warn(
                "{count} chat history rows of {name} found in the journal {path} (the last run "
                "ended before the database had them); writing them first",
                count=replayed, name=self.name, path=self.journal.path,
            )
        # Ids ahead, so that the first messages already carry their history row's id; a
        # database down now leaves that to the first write (the failure is logged, not raised).
        reserving = defer.ensureDeferred(self.history.reserve_ids())
        reserving.addErrback(lambda f: self._log.debug("History ids not reserved yet: {f}", f=f.value))
        for room_id in await self.store.get_room_ids():
            self.chat.add_room(room_id)
        if self.private_rooms:
            for row in await self.store.get_private_rooms():
                self.chat.add_room(room_key(row["parent_id"], row["proom_id"]), row["title"],
                                   None if row["owner"] is None else str(row["owner"]))
        self._log.info("{count} rooms preloaded for {name}{private}", count=len(self.chat.rooms()),
                       name=self.name,
                       private=" (ILIAS 8 private rooms on)" if self.private_rooms else "")
        # Serve messages only once the reserve has answered: a message taken before it would
        # carry a stand-in id, not its history row's (the live msgid and CHATHISTORY's differ).
        await reserving
        ns = self.namespace = self.client.socketio.namespace("/" + self.name)
        for event, handler in (
            ("login", self.on_login),
            ("enterRoom", self.on_enterRoom),
            ("message", self.on_message),
            ("userStartedTyping", self.on_userStartedTyping),
            ("userStoppedTyping", self.on_userStoppedTyping),
        ):
            ns.on(event, _in_order(handler))
        ns.on_disconnect = self.on_disconnect
        self.renderer.namespace = ns
        self._unsubscribe = self.client.bus.subscribe(self.chat.topic, self.renderer.deliver)
        # The other processes' state (rooms, members, admissions, presence), before any socket
        # or backend call is served; again whenever the bus reaches them after an outage.
        await self.chat.start()
        self._unresumed = self.client.bus.on_resumed(self.chat.request_sync)
        # A process that died (its heartbeat is missing) departs like one that said it stops.
        cluster = getattr(self.client, "cluster", None)
        if cluster is not None:
            self._ungone = cluster.on_instance_gone(self.chat.instance_gone)
        routes = self.client.routes
        routes.register("Connect", self.action_Connect, (2,))
        routes.register("CreatePrivateRoom", self.action_CreatePrivateRoom, (3, 4))
        routes.register("DeletePrivateRoom", self.action_DeletePrivateRoom, (3,))
        routes.register("EnterPrivateRoom", self.action_EnterPrivateRoom, (2, 3))
        routes.register("LeavePrivateRoom", self.action_LeavePrivateRoom, (2, 3))
        routes.register("InvitePrivateRoom", self.action_InvitePrivateRoom, (3, 4))
        routes.register("ClearMessages", self.action_ClearMessages, (2, 3))
        routes.register("Kick", self.action_Kick, (2, 3))
        routes.register("Ban", self.action_Ban, (2, 3))
        routes.register("GetRooms", self.action_GetRooms, (0,))
        routes.register("Post", self.action_Post, (1,))
        self._registered = list(self.ACTIONS)

    async def stop(self) -> None:
        """
        Stop serving, cancel the timers and wait until the history is written. The
        ``chatroom_users`` rows stay: alone, the service moves every row once all components
        stopped; in a cluster, the process that handles this one's departure moves, after the
        grace, the rows of the users who did not reconnect elsewhere.
        """
        for action in self._registered:
            self.client.routes.unregister(action)
        self._registered = []
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unresumed is not None:
            self._unresumed()
            self._unresumed = None
        if self._ungone is not None:
            self._ungone()
            self._ungone = None
        self.renderer.stop()
        self._repeats.flush()
        await self.chat.stop()
        await self.journal.close()

    async def _private_rooms_mode(self) -> bool:
        """client.cfg ``private_rooms``: ``on``, ``off``, or ``auto`` (the ILIAS 8 tables exist)."""
        mode = getattr(self.client.config, "private_rooms", "auto")
        if mode == "off":
            return False
        present = await self.store.has_private_rooms()
        if mode == "on" and not present:
            raise StoreError(
                "{}: private_rooms is \"on\" but the database has no ILIAS 8 private-room tables"
                " (chatroom_prooms, chatroom_psessions, chatroom_history.sub_room)".format(
                    getattr(self.client.config, "path", self.name)))
        return present

    def written_text(self, stored: str) -> str:
        """A stored message text as its writer wrote it (the IRC bridge's history reads rows)."""
        return html_unescaped(stored) if self.escape_messages else stored

    async def escape_mode(self) -> bool:
        """Whether message texts are HTML-escaped: not for a page that writes them as text."""
        return False

    # -- persistence hooks ------------------------------------------------------------------

    def _stored_message(self, event: Dict[str, Any]) -> str:
        return stored_message(event, self.private_rooms, self.escape_messages)

    def _store_notice(self, room_key: int, notice: Dict[str, Any]) -> None:
        """An ILIAS 8 notice row, queued with the messages (``sub_room`` from the room key)."""
        self.history.add(HistoryRow(room_key, stored_payload(notice), notice["timestamp"] // 1000))

    def _write_history(self, rows: Sequence[HistoryRow]) -> Any:
        # The domain's HistoryWriter keeps the rows and retries until they are written.
        if not self.private_rooms:
            return self.store.add_history_rows(
                [(r.hist_id, r.room_id, r.message, r.timestamp) for r in rows])
        stored = []
        for r in rows:
            room_id, sub_room_id = room_parts(r.room_id)
            stored.append((r.hist_id, room_id, r.message, r.timestamp, sub_room_id))
        return self.store.add_history_rows(stored)

    async def _member_gone(self, user_id: int, room_ids: List[int]) -> None:
        """
        The grace expired: the user's ``chatroom_users`` rows become sessions. In ILIAS 8 a
        private room counts for its main room, the user's private sessions end and a private
        room nobody is left in is closed (as the ILIAS 8 server's ``disconnectUser``).
        """
        now = int(self.reactor.seconds())
        await self.store.move_user_to_sessions(
            user_id, sorted({room_parts(key)[0] for key in room_ids}), now)
        private = [key for key in room_ids if room_parts(key)[1]]
        if not private:
            return
        await self.store.end_private_sessions(user_id, [room_parts(key)[1] for key in private], now)
        for key in private:
            room = self.chat.get_room(key)
            if room is None or not (room.members or self.chat.present(key)):
                await self.store.close_private_room(room_parts(key)[1], now)

    # -- bus -> sockets ---------------------------------------------------------------------

    def logged_in(self, socket: Any, user_id: int) -> None:
        """The domain accepted C{socket} as C{user_id}: it gets what is meant for that member."""
        self._sockets[socket.sid] = socket
        socket.data["user_id"] = user_id
        self.renderer.add_socket(socket, user_id)

    # -- socket events ----------------------------------------------------------------------

    def on_login(self, socket: Any, *args: Any) -> Any:
        """``login``: each variant's own; it ends with L{logged_in} (or refuses)."""
        raise NotImplementedError

    def on_enterRoom(self, socket: Any, *args: Any) -> None:
        """``enterRoom(roomId)`` (ILIAS 8: ``enterRoom(roomId, subRoomId)``)."""
        room_id = self._room_arg(socket, "enterRoom", args)
        if room_id is None:
            return
        try:
            self.chat.enter_room(socket.sid, room_id)
        except NotInRoom as e:
            self._refused(socket, "enterRoom", str(e))
            self.not_admitted(socket, room_id)
        except ChatError as e:
            self._refused(socket, "enterRoom", str(e))
        else:
            self.entered(socket, room_id)

    def entered(self, socket: Any, room_id: int) -> None:
        """The socket entered the room (each variant's own follow-up)."""

    def not_admitted(self, socket: Any, room_id: int) -> None:
        """A logged-in socket asked for a room its user is not admitted to (each variant's own)."""

    def on_message(self, socket: Any, *args: Any) -> None:
        """``message({content, format, target?}, roomId)``."""
        if len(args) < 2 or not isinstance(args[0], dict):
            self._refused(socket, "message", "expected message({content, format}, roomId)")
            return
        data = args[0]
        room_id = self._room_arg(socket, "message", args[1:])
        if room_id is None:
            return
        retry_after = self._throttle.refused(socket)
        if retry_after is not None:
            self._system_message(socket, too_fast_text(retry_after), room_id)
            return
        try:
            self.chat.post_message(socket.sid, room_id, data.get("content"), data.get("format"),
                                   data.get("target"))
        except ContentTooLong as e:
            self._refused(socket, "message", str(e))
            self._system_message(socket, too_long_text(len(data.get("content")), e.fits), room_id)
        except ChatError as e:
            self._refused(socket, "message", str(e))

    def _system_message(self, socket: Any, text: str, room_id: Any) -> None:
        """
        Tell this socket only, as a message from "Chat" that is never stored: a notice would show
        "-key-" on the ILIAS page (it has no language entry for ilchat's refusals).
        """
        if self.escape_messages:
            text = html_escaped(text)
        socket.emit("message", envelope_for("message", self.chat.now_ms(), text, room_id,
                                            self.private_rooms, **{"from": SYSTEM_SENDER},
                                            format={}))

    def on_userStartedTyping(self, socket: Any, *args: Any) -> None:
        """``userStartedTyping(roomId)``: to the other members only."""
        self._typing(socket, args, True)

    def on_userStoppedTyping(self, socket: Any, *args: Any) -> None:
        """``userStoppedTyping(roomId)``."""
        self._typing(socket, args, False)

    def on_disconnect(self, socket: Any, reason: str) -> None:
        """The socket is gone; the domain starts the grace if it was the user's last."""
        if self._sockets.pop(socket.sid, None) is not None:
            self.renderer.remove_socket(socket.sid)
            self.chat.connection_lost(socket.sid)

    def _typing(self, socket: Any, args: Sequence[Any], started: bool) -> None:
        event = "userStartedTyping" if started else "userStoppedTyping"
        room_id = self._room_arg(socket, event, args)
        if room_id is None:
            return
        try:
            self.chat.typing(socket.sid, room_id, started)
        except ChatError as e:
            self._refused(socket, event, str(e))

    def _room_arg(self, socket: Any, event: str, args: Sequence[Any]) -> Optional[int]:
        """The room key of ``(roomId[, subRoomId])`` event arguments, or None (refused)."""
        if not args:
            self._refused(socket, event, "missing roomId")
            return None
        try:
            room_id = parse_id(args[0], "roomId")
            sub = 0 if len(args) < 2 or args[1] is None else parse_id(args[1], "subRoomId")
            return self._room_key(room_id, sub)
        except ValueError as e:
            self._refused(socket, event, str(e))
            return None

    def _room_key(self, room_id: int, sub_room_id: int) -> int:
        """
        The domain key of a room id and ``subRoomId``.

        Raises:
            ValueError: a negative id, or a private room while they are off.
        """
        if room_id < 0 or sub_room_id < 0:
            raise ValueError(f"no room {room_id}_{sub_room_id}")
        if sub_room_id and not self.private_rooms:
            raise ValueError("private rooms (ILIAS 8 subRoomId) are off for this client")
        return room_key(room_id, sub_room_id)

    def _refused(self, socket: Any, event: str, reason: str) -> None:
        self._repeats.info("{event} from {sid} on {ns} refused: {reason}", event=event,
                           sid=socket.sid, ns=self.namespace.name if self.namespace else self.name,
                           reason=reason)

    # -- backend actions --------------------------------------------------------------------

    def _room_segments(self, args: List[str], plain: int) -> Tuple[int, List[str]]:
        """
        The room key and the other segments of an action, in the ILIAS 9+ form (C{plain}
        segments, ``roomId`` first) or the ILIAS 8 form (``subRoomId`` after ``roomId``).

        Raises:
            BadRequest: ids that are not numbers; NotFound: a private room while they are off.
        """
        sub = _url_id(args[1], "subRoomId") if len(args) == plain + 1 else 0
        room_id = _url_id(args[0], "roomId")
        rest = list(args[2:] if len(args) == plain + 1 else args[1:])
        try:
            return self._room_key(room_id, sub), rest
        except ValueError as e:
            raise NotFound(str(e))

    @staticmethod
    def _reply(args: List[str], plain: int, body: Dict[str, Any]) -> Dict[str, Any]:
        """ILIAS 8's answers name the ``subRoomId`` the URL had."""
        if len(args) == plain + 1:
            body["subRoomId"] = int(args[1])
        return body

    def action_Connect(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``Connect/<name>/<roomId>/<id>``: register the user (``roomId`` is ignored)."""
        self.chat.connect(_url_id(args[1], "user id"))
        return {"status": 200}

    def action_CreatePrivateRoom(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """
        ``CreatePrivateRoom/<name>/<roomId>[/<subRoomId>]/<ownerId>/<title>``: a room created
        after start (ILIAS 8: also a private room, announced to its owner's tabs).
        """
        key, (owner, title) = self._room_segments(args, 3)
        self.chat.add_room(key, title, owner)
        return self._reply(args, 3, {"success": True})

    def action_DeletePrivateRoom(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``DeletePrivateRoom/<name>/<roomId>/<subRoomId>/<id>`` (ILIAS 8): the room is gone."""
        key, (user_id,) = self._room_segments(args, 2)
        _url_id(user_id, "user id")
        if not room_parts(key)[1]:
            raise NotFound("only a private room (subRoomId > 0) can be deleted")
        try:
            self.chat.delete_room(key)
        except UnknownRoom as e:
            raise NotFound(str(e))
        return self._reply(args, 2, {"success": True})

    def action_EnterPrivateRoom(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``EnterPrivateRoom/<name>/<roomId>[/<subRoomId>]/<id>``: room membership."""
        key, (user_id,) = self._room_segments(args, 2)
        try:
            self.chat.add_room_member(key, _url_id(user_id, "user id"))
        except (UnknownRoom, UnknownUser) as e:
            raise NotFound(str(e))
        return self._reply(args, 2, {"success": True})

    def action_LeavePrivateRoom(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``LeavePrivateRoom/<name>/<roomId>[/<subRoomId>]/<id>``."""
        key, (user_id,) = self._room_segments(args, 2)
        try:
            self.chat.leave_room(key, _url_id(user_id, "user id"))
        except (UnknownRoom, UnknownUser) as e:
            raise NotFound(str(e))
        return self._reply(args, 2, {"success": True})

    def action_InvitePrivateRoom(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``InvitePrivateRoom/<name>/<roomId>[/<subRoomId>]/<id>/<invitedId>``."""
        key, (host_id, invitee_id) = self._room_segments(args, 3)
        try:
            self.chat.invite(key, _url_id(host_id, "user id"), _url_id(invitee_id, "invited id"))
        except UnknownRoom as e:
            raise NotFound(str(e))
        return self._reply(args, 3, {"success": True})

    def action_ClearMessages(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``ClearMessages/<name>/<roomId>[/<subRoomId>]/<id>``: PHP deletes the rows; we tell the room."""
        key, (user_id,) = self._room_segments(args, 2)
        _url_id(user_id, "user id")
        try:
            self.chat.clear(key)
        except UnknownRoom as e:
            raise NotFound(str(e))
        return self._reply(args, 2, {"success": True})

    def action_Kick(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``Kick/<name>/<roomId>[/<subRoomId>]/<id>``: success even if the user is not in the chat."""
        key, (user_id,) = self._room_segments(args, 2)
        try:
            self.chat.kick(key, _url_id(user_id, "user id"))
        except UnknownRoom as e:
            raise NotFound(str(e))
        return self._reply(args, 2, {"success": True})

    def action_Ban(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``Ban/<name>/<roomId>[/<subRoomId>]/<id>``: success even if the user is not in the chat."""
        key, (user_id,) = self._room_segments(args, 2)
        if self.chat.get_room(key) is None:
            raise NotFound(f"unknown room {room_name(key)}")
        self.chat.ban(key, _url_id(user_id, "user id"))
        return self._reply(args, 2, {"success": True})

    def action_GetRooms(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``GetRooms/<name>``: every room with its title, owner and present users."""
        return rooms_body(self.chat)

    def action_Post(self, client: Any, request: Any, args: List[str]) -> Dict[str, Any]:
        """``Post/<name>/<roomId>``: a legacy action the Node server accepts and ignores."""
        return {"success": True}


def rooms_body(chat: ChatRooms) -> Dict[str, Any]:
    """The ``GetRooms`` body: ``{"rooms": {"<id>_0": {id, title, owner, users}}}``."""
    rooms = {}
    for room in chat.rooms():
        users = []
        for present in chat.present(room.id):
            member = chat.get_member(present["id"])
            users.append(ilias_user(present if member is None else member_info(member)))
        room_id, sub_room_id = room_parts(room.id)
        body = rooms[room_name(room.id)] = {"id": room_id, "title": room.title,
                                            "owner": room.owner, "users": users}
        if sub_room_id:
            body["subRoomId"] = sub_room_id
    return {"rooms": rooms}


def _in_order(handler: Any) -> Any:
    """A namespace handler that runs C{handler} after the socket's earlier events."""

    def run(socket: Any, *args: Any) -> Any:
        return in_order(socket, handler, socket, *args)

    return run


