# -*- test-case-name: tests.chat.test_rooms -*-
"""
Room events as the ILIAS repository chat's Socket.IO frames (spec §3.2, §10.2).

L{RoomRenderer} subscribes to ``room:<client name>`` (L{ilchat.chat.events}) for one Socket.IO
namespace and delivers to the sockets this process owns, in the order and shape of ILIAS 10's
Node server: the ILIAS message envelope ``{type, timestamp, content, roomId, ...}``, the
Socket.IO room ``"<id>_0"`` of each chat room, ``userlist`` snapshots, notices. The ILIAS
repository chat and the standalone chat (whose page speaks the same events) each own one.

ILIAS 8 private rooms (``RoomRenderer.private_rooms``, spec §2.4, §3.2): every envelope carries
``subRoomId`` after ``roomId`` (0 for a main room), a private room's Socket.IO room is
``"<roomId>_<subRoomId>"``, and the frames only ILIAS 8 has are sent: ``private_room_created`` to
the owner, ``private_room_deleted`` to the members and ``private_room_closed`` to the main room,
the ``private_room_entered`` / ``private_room_entered_user`` notices instead of ``welcome_to_chat``
/ ``connect`` in a private room, and the main room's ``left`` and userlist for a user who leaves
one; the ``connect``/``private_room_entered_user`` and ``disconnected`` notices also go to
``chatroom_history`` (``RoomRenderer.notice_history``). Without it the frames are ILIAS 10's,
byte for byte.

ILIAS 8 and 9 pages insert message texts as HTML (``RoomRenderer.escape_messages``,
L{ilchat.ilias.escaping}): their ``content`` is sent and stored HTML-escaped, as their Node server
did, whoever wrote it (a browser, an IRC user, another process of the cluster).

Userlists are kept here, per renderer: for each room the present members (from the presence
events, through L{ClusterPresence}: one entry per user whatever the processes holding them; a
departure only when the last lets go; a ``connect`` notice only when the first takes hold;
``snapshot`` presence applied silently, userlist only) in ascending id order with each member's entry encoded once, so that a userlist is two
C-level joins and is spliced into the packet without encoding it again (a crowd of 1,000 joining
one room sends each newcomer the full list: encoding those was 30 % of the server's CPU).

Crowds: the room-wide ``userlist`` is coalesced per room. The first change in a quiet room is sent
at once (so a normal join has exactly the Node server's frame order); further changes within a
window that grows with the square of the room size (50 ms for a class, about 5 s for 1,000
members, at most 10 s) are folded into one trailing ``userlist``. A newcomer whose change was
folded gets its own ``userlist`` immediately, so nobody waits for it. In a room of more than
L{RoomRenderer.CROWD_SIZE} members, the ``connect`` notice of a join (and the ``disconnected``
notice of a departure) that falls into such a window is not sent: n joiners times n members
would be O(n²) frames, and the browser sees the change in the userlist.
"""

import bisect
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.chat.cluster_presence import Change, ClusterPresence
from ilchat.chat.model import room_parts
from ilchat.ilias.escaping import html_escaped
from ilchat.jsonutil import dumps

__all__ = [
    "RoomRenderer",
    "UserList",
    "envelope",
    "envelope_for",
    "ilias_user",
    "message_payload",
    "room_name",
    "stored_message",
    "stored_payload",
    "userlist_json",
]

RoomKey = Union[int, str]
Entry = Tuple[str, Dict[str, Any], str]


def room_name(room_key: int) -> str:
    """
    The ``"<id>_0"`` id the Node server used for rooms (and socket.io room names);
    ``"<id>_<subRoomId>"`` for an ILIAS 8 private room.
    """
    room_id, sub_room_id = room_parts(room_key)
    return f"{room_id}_{sub_room_id}"


def envelope(
    type_: str, timestamp: int, content: str, room_key: RoomKey, **extra: Any
) -> Dict[str, Any]:
    """The ILIAS 9+ message envelope, keys in the order ILIAS writes them (spec §3.2, §10.2)."""
    payload: Dict[str, Any] = {
        "type": type_,
        "timestamp": timestamp,
        "content": content,
        "roomId": room_key,
    }
    payload.update(extra)
    return payload


def envelope_for(
    type_: str, timestamp: int, content: str, key: Optional[RoomKey], private_rooms: bool,
    sub_room: Optional[RoomKey] = None, **extra: Any
) -> Dict[str, Any]:
    """
    The envelope of a frame about room key C{key} (the int, or its text where ILIAS writes the
    room id as a string; None for no room): ``roomId`` is the room id, and with
    C{private_rooms} (ILIAS 8) ``subRoomId`` follows, the key's own unless C{sub_room} is given.
    """
    room_id, sub = (None, 0) if key is None else room_parts(int(key))
    if isinstance(key, str):
        room_id, sub = str(room_id), str(sub)
    payload = envelope(type_, timestamp, content, room_id)
    if private_rooms:
        payload["subRoomId"] = sub if sub_room is None else sub_room
    payload.update(extra)
    return payload


def ilias_user(member: Dict[str, Any]) -> Dict[str, Any]:
    """The ``{id, username, profile_picture_visible}`` object of userlists and ``from``."""
    return {
        "id": member["id"],
        "username": member["name"],
        "profile_picture_visible": member["picture"],
    }


def message_payload(event: Dict[str, Any], private_rooms: bool = False,
                    escaped: bool = False) -> Dict[str, Any]:
    """
    The ILIAS ``message`` payload of a ``message`` event; with C{private_rooms} ILIAS 8's, with
    C{escaped} its text HTML-escaped for the ILIAS 8/9 pages (L{html_escaped}).
    """
    content = html_escaped(event["content"]) if escaped else event["content"]
    payload = envelope_for("message", event["ts"], content, event["room"], private_rooms,
                           **{"from": ilias_user(event["sender"])}, format=event["format"])
    target = event["target"]
    if target is not None:
        payload["target"] = {"username": target["name"], "id": target["id"],
                             "public": target["public"]}
    return payload


def stored_message(event: Dict[str, Any], private_rooms: bool = False,
                   escaped: bool = False) -> str:
    """``chatroom_history.message`` of a ``message`` event: the payload, timestamp in seconds."""
    return stored_payload(message_payload(event, private_rooms, escaped))


def stored_payload(payload: Dict[str, Any]) -> str:
    """``chatroom_history.message`` of a sent payload: its JSON with the timestamp in seconds."""
    return dumps(dict(payload, timestamp=payload["timestamp"] // 1000))


class UserList(Dict[str, Dict[str, Any]]):
    """
    ``users`` of a ``userlist`` payload: a plain dict for every reader, plus ``json``, its compact
    JSON made from the members' cached entries (see L{userlist_json}).
    """

    __slots__ = ("json",)


def userlist_json(event: str, payload: Any) -> Optional[str]:
    """
    The ``[event, payload]`` JSON of a userlist whose ``users`` is a L{UserList}, or None to
    encode the usual way.

    ``users`` is the envelope's last key, so the rest is encoded (a few fields) and the list's
    text goes in before the closing brace: the same bytes ``json.dumps`` would give.
    """
    if event != "userlist" or not isinstance(payload, dict):
        return None
    users = payload.get("users")
    if not isinstance(users, UserList) or next(reversed(payload)) != "users":
        return None
    text = getattr(users, "json", None)
    if text is None:
        return None
    head = dumps({key: value for key, value in payload.items() if key != "users"})
    return '["userlist",' + head[:-1] + (',"users":' if len(head) > 2 else '"users":') + text + "}]"


@attrs.define(slots=True, eq=False)
class _RoomView:
    """One room as this renderer sees it: present members (sorted) and the coalescing state."""

    id: int
    ids: List[int] = attrs.Factory(list)
    keys: List[str] = attrs.Factory(list)
    users: List[Dict[str, Any]] = attrs.Factory(list)
    texts: List[str] = attrs.Factory(list)
    call: Optional[IDelayedCall] = None
    next_at: float = 0.0
    key: RoomKey = 0

    def add(self, user_id: int, entry: Entry) -> None:
        i = bisect.bisect_left(self.ids, user_id)
        if i < len(self.ids) and self.ids[i] == user_id:
            return
        key, user, text = entry
        self.ids.insert(i, user_id)
        self.keys.insert(i, key)
        self.users.insert(i, user)
        self.texts.insert(i, text)

    def remove(self, user_id: int) -> bool:
        i = bisect.bisect_left(self.ids, user_id)
        if i == len(self.ids) or self.ids[i] != user_id:
            return False
        del self.ids[i], self.keys[i], self.users[i], self.texts[i]
        return True

    def replace(self, user_id: int, entry: Entry) -> None:
        i = bisect.bisect_left(self.ids, user_id)
        if i < len(self.ids) and self.ids[i] == user_id:
            _, self.users[i], self.texts[i] = entry

    def userlist(self) -> UserList:
        users = UserList(zip(self.keys, self.users))
        users.json = "{" + ",".join(self.texts) + "}"
        return users


class RoomRenderer:
    """
    Delivers one client's room events to the sockets of one namespace.

    The owner tells it which sockets are logged in as whom (L{add_socket}/L{remove_socket}):
    recipients in events are member ids, and a socket id is this process's own business.

    Args:
        reactor: C{seconds()} and C{callLater()} for the userlist windows.
        namespace: the Socket.IO namespace (C{emit}, C{emit_json}); set later is fine.
        instance: this process's bus instance (L{ClusterPresence}'s C{own}).
        private_rooms: render ILIAS 8's frames (see the module docstring).
        escape_messages: send message texts HTML-escaped (ILIAS 8 and 9).
    """

    _log = Logger()

    USERLIST_MIN_WINDOW = 0.05
    USERLIST_MAX_WINDOW = 10.0
    #: Rooms with more members than this fold the ``connect`` notices of a crowd.
    CROWD_SIZE = 100

    def __init__(self, reactor: IReactorTime, namespace: Any = None,
                 instance: Optional[str] = None, private_rooms: bool = False,
                 escape_messages: bool = False) -> None:
        self.reactor = reactor
        self.namespace = namespace
        #: ILIAS 8 frames (``subRoomId``, private rooms); set before the first delivery.
        self.private_rooms = private_rooms
        #: Message texts HTML-escaped (ILIAS 8 and 9 pages); set before the first delivery.
        self.escape_messages = escape_messages
        #: ILIAS 8: C{notice_history(room key, notice)} stores the ``connect`` (in a private room
        #: ``private_room_entered_user``) and ``disconnected`` notices of the events this process
        #: published, once cluster-wide, as ILIAS 8's server wrote them to ``chatroom_history``.
        self.notice_history: Optional[Callable[[RoomKey, Dict[str, Any]], None]] = None
        self._instance = instance
        self._own_event = False
        self._sockets: Dict[str, Any] = {}
        self._by_user: Dict[int, Set[str]] = {}
        self._user_of: Dict[str, int] = {}
        self._views: Dict[int, _RoomView] = {}
        # member id -> (name, picture, entry), the userlist entry encoded once per identity.
        self._entries: Dict[int, Tuple[Optional[str], bool, Entry]] = {}
        # member id -> the rooms whose view lists them (for a rename).
        self._present_in: Dict[int, Set[int]] = {}
        #: Who is present where, cluster-wide, from the events delivered so far.
        self.presence = ClusterPresence(instance)

    # -- sockets ----------------------------------------------------------------------------

    def add_socket(self, socket: Any, user_id: int) -> None:
        """A socket logged in as C{user_id}: it gets what is meant for that member."""
        self._sockets[socket.sid] = socket
        self._user_of[socket.sid] = user_id
        self._by_user.setdefault(user_id, set()).add(socket.sid)

    def remove_socket(self, sid: str) -> None:
        """The socket is gone (disconnected)."""
        self._sockets.pop(sid, None)
        user_id = self._user_of.pop(sid, None)
        sids = self._by_user.get(user_id) if user_id is not None else None
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._by_user[user_id]

    def sockets_of(self, user_ids: Iterable[int]) -> List[str]:
        """The ids of this process's sockets logged in as any of those members, sorted."""
        sids: Set[str] = set()
        for user_id in user_ids:
            sids.update(self._by_user.get(user_id, ()))
        return sorted(sids)

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        for view in self._views.values():
            if view.call is not None and view.call.active():
                view.call.cancel()
            view.call = None

    # -- bus --------------------------------------------------------------------------------

    def deliver(self, envelope_: Dict[str, Any]) -> None:
        """Bus subscriber of ``room:<name>``."""
        if self.namespace is None:
            return
        event = envelope_["event"]
        self._own_event = envelope_.get("origin") == self._instance
        changes = self.presence.apply(envelope_)
        handler = getattr(self, "_on_" + str(event.get("type")), None)
        if handler is not None:
            handler(event, changes)

    def _on_entered(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        room_id, ts, conn = event["room"], event["ts"], event["connection"]
        member = event["member"]
        view = self._view(room_id)
        socket = self._sockets.get(conn)
        if socket is not None:
            socket.join(room_name(room_id))
            self._emit_to([conn], "private_room_entered",
                          self._envelope("private_room_entered", ts, "private_room_entered",
                                         room_id, subscriber={"id": member["id"],
                                                              "username": member["name"]}))
        self._present(view, member)
        if not self._userlist_changed(view, room_id, ts) and socket is not None:
            self._emit_to([conn], "userlist", self._userlist_payload(view, room_id, ts))
        if changes:  # the first instance to hold them in the room (``first`` is per instance)
            data = {"id": member["id"], "username": member["name"], "title": event["title"]}
            # ILIAS 8 greets in a private room with its own notices.
            private = room_parts(room_id)[1] != 0
            if socket is not None:
                self._emit_to([conn], "notice", self._envelope(
                    "notice", ts, "private_room_entered" if private else "welcome_to_chat",
                    room_id, data=data))
            notice = self._envelope("notice", ts,
                                    "private_room_entered_user" if private else "connect",
                                    room_id, data=dict(data))
            if not self._in_crowd(view):
                self._emit_room(room_id, "notice", notice, skip=[conn])
            self._stored_notice(room_id, notice)

    def _on_parted(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        socket = self._sockets.get(event["connection"])
        if socket is not None:
            socket.leave(room_name(event["room"]))
        if changes:  # gone, and no other instance holds them
            self._departed(event)

    def _on_left(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        if changes:
            self._departed(event)

    def _on_snapshot(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        """Another process's holdings, after a restart or an outage: userlists only."""
        touched: Dict[int, _RoomView] = {}
        for room_id, member, present in changes:
            view = touched[room_id] = self._view(room_id)
            if present:
                self._present(view, member)
            else:
                self._absent(view, member["id"])
        for room_id, view in sorted(touched.items()):
            self._userlist_changed(view, room_id, event["ts"])

    # A stopping process's last word carries its holdings too (see ilchat.chat.events).
    _on_sync_request = _on_instance_stopping = _on_snapshot

    def _departed(self, event: Dict[str, Any]) -> None:
        # ILIAS 10 sends the room id as a string here (spec §10.2).
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        key = str(room_id)
        self._userlist_changed(view, key, ts)
        notice = self._envelope("notice", ts, "disconnected", key,
                                data={"username": member["name"]})
        if not self._in_crowd(view):
            self._emit_room(room_id, "notice", notice)
        self._stored_notice(room_id, notice)

    def _stored_notice(self, room_id: int, notice: Dict[str, Any]) -> None:
        # The publisher stores (ILIAS 8 stored even the notices a crowd does not get to see).
        if self.notice_history is not None and self._own_event:
            self.notice_history(room_id, notice)

    def _on_room_left(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        sids = self.sockets_of([member["id"]])
        if sids:
            self._leave(sids, room_id)
            # Back in the main room: its ``left`` notice and userlist (the same room in ILIAS 10).
            main = room_parts(room_id)[0]
            self._emit_to(sids, "notice", self._envelope("notice", ts, "left", main))
            self._emit_to(sids, "userlist", self._userlist_payload(self._view(main), main, ts))
        self._userlist_changed(view, room_id, ts)
        self._emit_room(room_id, "notice",
                        self._envelope("notice", ts, "private_room_left", room_id,
                                       data={"user": member["name"], "title": event["title"]}))

    def _on_kicked(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        sids = self.sockets_of([member["id"]])
        if sids:
            self._emit_to(sids, "userjustkicked",
                          self._envelope("userjustkicked", ts, "userjustkicked", room_id))
            self._emit_to(sids, "notice",
                          self._envelope("notice", ts, "kicked_from_private_room", room_id,
                                         sub_room=0, data={"title": event["title"]}))
            self._leave(sids, room_id)
        self._userlist_changed(view, room_id, ts)
        self._emit_room(room_id, "notice", self._envelope("notice", ts, "user_kicked", room_id,
                                                          data={"user": member["name"]}))

    def _on_banned(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        ts, member, user_id = event["ts"], event["member"], event["member"]["id"]
        room_id = event["room"]
        if room_id is not None:
            view = self._view(room_id)
            self._absent(view, user_id)
            sids = self.sockets_of([user_id])
            if sids:
                self._emit_to(sids, "userjustbanned", None)
                self._leave(sids, room_id)
            key = str(room_id)
            self._userlist_changed(view, key, ts)
            self._emit_room(room_id, "notice", self._envelope("notice", ts, "user_kicked", key,
                                                              data={"user": member["name"]}))
        for other, _, _ in changes:
            if other == room_id:
                continue
            view = self._view(other)
            self._absent(view, user_id)
            self._userlist_changed(view, other, ts)
        # The domain logged these sockets out: nothing meant for the member reaches them now.
        self._by_user.pop(user_id, None)

    def _on_cleared(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        room_id, ts = event["room"], event["ts"]
        self._emit_room(room_id, "clear",
                        self._envelope("clear", ts, "history_has_been_cleared", room_id))
        self._emit_room(room_id, "notice",
                        self._envelope("notice", ts, "history_has_been_cleared", room_id))

    def _on_invited(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        room_id, ts, title = event["room"], event["ts"], event["title"]
        host, invitee = event["host"], event["invitee"]
        self._emit_to(self.sockets_of([host["id"]]), "notice",
                      self._envelope("notice", ts, "user_invited", room_id,
                                     data={"user": invitee["name"], "room": title}))
        sids = self.sockets_of([invitee["id"]])
        self._emit_to(sids, "user_invited",
                      self._envelope("user_invited", ts, "user_invited", room_id, title=title,
                                     owner=event["owner"]))
        # ILIAS 8 writes subRoomId -1 into this notice (InviteRoom.js).
        self._emit_to(sids, "notice",
                      self._envelope("notice", ts, "user_invited_self", room_id, sub_room=-1,
                                     data={"user": host["name"], "room": title}))

    def _on_room_created(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        """ILIAS 8: the owner's tabs hear of the private room PHP created for them."""
        room_id, sub = room_parts(event["room"])
        owner = event["owner"]
        if not self.private_rooms or sub == 0 or owner is None or not str(owner).isdigit():
            return
        self._emit_to(self.sockets_of([int(owner)]), "private_room_created", self._envelope(
            "private_room_created", event["ts"], "private_room_created", event["room"],
            title=event["title"], ownerId=owner))

    def _on_room_deleted(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        """ILIAS 8 ``DeletePrivateRoom``: the members are out, the main room hears it closed."""
        room_id, ts = event["room"], event["ts"]
        view = self._views.pop(room_id, None)
        if view is not None and view.call is not None and view.call.active():
            view.call.cancel()
        for _, member, _ in changes:
            if view is not None:
                self._absent(view, member["id"])
        sids = self.sockets_of(event["members"])
        self._leave(sids, room_id)
        self._emit_to(sids, "private_room_deleted",
                      self._envelope("private_room_deleted", ts, "private_room_deleted", room_id))
        main = room_parts(room_id)[0]
        self._emit_room(main, "notice", self._envelope("notice", ts, "private_room_closed", main,
                                                       data={"title": event["title"]}))

    def _on_renamed(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        member = event["member"]
        rooms = self._present_in.get(member["id"])
        if not rooms:
            return  # listed nowhere: the next ``entered`` brings the new name
        entry = self._entry(member)
        for room_id in sorted(rooms):
            view = self._views[room_id]
            view.replace(member["id"], entry)
            # The browsers' userlists show the new name (an IRC nick change, a second login).
            self._userlist_changed(view, room_id, event["ts"])

    def _on_message(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        payload = message_payload(event, self.private_rooms, self.escape_messages)
        target = event["target"]
        if target is None or target["public"]:
            self._emit_room(event["room"], "message", payload)
        else:
            self._emit_to(self.sockets_of([event["sender"]["id"], target["id"]]), "message",
                          payload)

    def _on_typing(self, event: Dict[str, Any], changes: Sequence[Change] = ()) -> None:
        started, member = event["started"], event["member"]
        kind = "user_started_typing" if started else "user_stopped_typing"
        name = "userStartedTyping" if started else "userStoppedTyping"
        sids = self.sockets_of(event["recipients"])
        if sids:
            self._emit_to(sids, name, self._envelope(
                kind, event["ts"], kind, event["room"],
                subscriber=dumps({"id": member["id"], "username": member["name"]})))

    # -- presence and userlists -------------------------------------------------------------

    def _view(self, room_id: int) -> _RoomView:
        view = self._views.get(room_id)
        if view is None:
            view = self._views[room_id] = _RoomView(room_id)
        return view

    def _entry(self, member: Dict[str, Any]) -> Entry:
        user_id, name, picture = member["id"], member["name"], member["picture"]
        cached = self._entries.get(user_id)
        if cached is not None and cached[0] == name and cached[1] == picture:
            return cached[2]
        key, user = str(user_id), ilias_user(member)
        entry = (key, user, dumps(key) + ":" + dumps(user))
        self._entries[user_id] = (name, picture, entry)
        return entry

    def _present(self, view: _RoomView, member: Dict[str, Any]) -> None:
        user_id = member["id"]
        cached = self._entries.get(user_id)
        entry = self._entry(member)
        rooms = self._present_in.setdefault(user_id, set())
        if cached is not None and cached[2] is not entry:
            for room_id in rooms:  # a new name or picture setting since (a login again)
                self._views[room_id].replace(user_id, entry)
        if view.id in rooms:
            return
        rooms.add(view.id)
        view.add(user_id, entry)

    def _absent(self, view: _RoomView, user_id: int) -> None:
        view.remove(user_id)
        rooms = self._present_in.get(user_id)
        if rooms is not None:
            rooms.discard(view.id)
            if not rooms:
                del self._present_in[user_id]
                self._entries.pop(user_id, None)

    def _in_crowd(self, view: _RoomView) -> bool:
        """A crowd is arriving or leaving: a big room whose userlist is being coalesced."""
        return len(view.ids) > self.CROWD_SIZE and view.call is not None

    def _userlist_window(self, view: _RoomView) -> float:
        # A userlist is O(n) bytes sent to n sockets: the window grows with n² so that a big
        # room's userlist traffic stays bounded (50 ms for a class, 5 s for 1,000 members).
        n = len(view.ids)
        return min(self.USERLIST_MAX_WINDOW, self.USERLIST_MIN_WINDOW + 5e-6 * n * n)

    def _userlist_changed(self, view: _RoomView, key: RoomKey, ts: int) -> bool:
        """
        Send the room-wide ``userlist`` now, or fold it into one trailing send.

        Returns:
            True when it was sent now (the caller need not send a private copy).
        """
        # When it happened, not when the bus delivered it: the windows follow the room's events.
        now = ts / 1000.0
        if view.call is None and now >= view.next_at:
            view.next_at = now + self._userlist_window(view)
            self._emit_room(view.id, "userlist", self._userlist_payload(view, key, ts))
            return True
        view.key = key
        if view.call is None:
            delay = max(0.0, view.next_at - self.reactor.seconds())
            view.call = self.reactor.callLater(delay, self._flush, view)
        return False

    def _flush(self, view: _RoomView) -> None:
        view.call = None
        now = self.reactor.seconds()
        view.next_at = now + self._userlist_window(view)
        if self.namespace is not None:
            self._emit_room(view.id, "userlist",
                            self._userlist_payload(view, view.key, int(now * 1000)))

    def _userlist_payload(self, view: _RoomView, key: RoomKey, ts: int) -> Dict[str, Any]:
        return self._envelope("userlist", ts, "userlist", key, users=view.userlist())

    def _envelope(self, type_: str, ts: int, content: str, key: RoomKey,
                  **extra: Any) -> Dict[str, Any]:
        """The envelope of a frame about room key C{key} in this renderer's ILIAS version."""
        return envelope_for(type_, ts, content, key, self.private_rooms, **extra)

    # -- sending ----------------------------------------------------------------------------

    def _emit_room(self, room_id: int, event: str, payload: Optional[Dict[str, Any]],
                   skip: Optional[List[str]] = None) -> None:
        self._emit(event, payload, room_name(room_id), skip or None)

    def _emit_to(self, sids: List[str], event: str, payload: Optional[Dict[str, Any]]) -> None:
        # Socket ids name the sockets themselves, so this is one encoding as well.
        sids = [sid for sid in sids if sid in self._sockets]
        if sids:
            self._emit(event, payload, sids, None)

    def _emit(self, event: str, payload: Optional[Dict[str, Any]], room: Any,
              skip: Optional[List[str]]) -> None:
        if self.namespace is None:
            return  # nothing to render to yet (deliver() waits for it too)
        data_json = userlist_json(event, payload)
        if data_json is not None:
            self.namespace.emit_json(data_json, room=room, skip=skip)
        elif payload is None:
            self.namespace.emit(event, room=room, skip=skip)
        else:
            self.namespace.emit(event, payload, room=room, skip=skip)

    def _leave(self, sids: List[str], room_id: int) -> None:
        name = room_name(room_id)
        for sid in sids:
            socket = self._sockets.get(sid)
            if socket is not None:
                socket.leave(name)
