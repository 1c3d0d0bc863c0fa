# -*- test-case-name: tests.chat.test_rooms -*-
"""
Room events as the ILIAS repository chat's Socket.IO frames (spec §3.2, §10.2).

L{RoomRenderer} subscribes to ``room:<client name>`` (L{ilchat.chat.events}) for one Socket.IO
namespace and delivers to the sockets this process owns, in the order and shape of ILIAS 10's
Node server: the ILIAS message envelope ``{type, timestamp, content, roomId, ...}``, the
Socket.IO room ``"<id>_0"`` of each chat room, ``userlist`` snapshots, notices. The ILIAS
repository chat and the standalone chat (whose page speaks the same events) each own one.

Userlists are kept here, per renderer: for each room the present members (from the presence
events) in ascending id order with each member's entry encoded once, so that a userlist is two
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
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.jsonutil import dumps

__all__ = [
    "RoomRenderer",
    "UserList",
    "envelope",
    "ilias_user",
    "message_payload",
    "room_name",
    "stored_message",
    "userlist_json",
]

RoomKey = Union[int, str]
Entry = Tuple[str, Dict[str, Any], str]


def room_name(room_id: int) -> str:
    """The ``"<id>_0"`` id the Node server used for rooms (and socket.io room names)."""
    return f"{room_id}_0"


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


def ilias_user(member: Dict[str, Any]) -> Dict[str, Any]:
    """The ``{id, username, profile_picture_visible}`` object of userlists and ``from``."""
    return {
        "id": member["id"],
        "username": member["name"],
        "profile_picture_visible": member["picture"],
    }


def message_payload(event: Dict[str, Any]) -> Dict[str, Any]:
    """The ILIAS ``message`` payload of a ``message`` event."""
    payload = envelope("message", event["ts"], event["content"], event["room"],
                       **{"from": ilias_user(event["sender"])}, format=event["format"])
    target = event["target"]
    if target is not None:
        payload["target"] = {"username": target["name"], "id": target["id"],
                             "public": target["public"]}
    return payload


def stored_message(event: Dict[str, Any]) -> str:
    """``chatroom_history.message`` of a ``message`` event: the payload, timestamp in seconds."""
    return dumps(dict(message_payload(event), timestamp=event["ts"] // 1000))


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
    """

    _log = Logger()

    USERLIST_MIN_WINDOW = 0.05
    USERLIST_MAX_WINDOW = 10.0
    #: Rooms with more members than this fold the ``connect`` notices of a crowd.
    CROWD_SIZE = 100

    def __init__(self, reactor: IReactorTime, namespace: Any = None) -> None:
        self.reactor = reactor
        self.namespace = namespace
        self._sockets: Dict[str, Any] = {}
        self._by_user: Dict[int, Set[str]] = {}
        self._user_of: Dict[str, int] = {}
        self._views: Dict[int, _RoomView] = {}
        # member id -> (name, picture, entry), the userlist entry encoded once per identity.
        self._entries: Dict[int, Tuple[Optional[str], bool, Entry]] = {}
        # member id -> the rooms whose view lists them (for a rename).
        self._present_in: Dict[int, Set[int]] = {}

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
        handler = getattr(self, "_on_" + str(event.get("type")), None)
        if handler is not None:
            handler(event)

    def _on_entered(self, event: Dict[str, Any]) -> None:
        room_id, ts, conn = event["room"], event["ts"], event["connection"]
        member = event["member"]
        view = self._view(room_id)
        socket = self._sockets.get(conn)
        if socket is not None:
            socket.join(room_name(room_id))
            self._emit_to([conn], "private_room_entered",
                          envelope("private_room_entered", ts, "private_room_entered", room_id,
                                   subscriber={"id": member["id"], "username": member["name"]}))
        self._present(view, member)
        if not self._userlist_changed(view, room_id, ts) and socket is not None:
            self._emit_to([conn], "userlist", self._userlist_payload(view, room_id, ts))
        if event["first"]:
            data = {"id": member["id"], "username": member["name"], "title": event["title"]}
            if socket is not None:
                self._emit_to([conn], "notice",
                              envelope("notice", ts, "welcome_to_chat", room_id, data=data))
            if not self._in_crowd(view):
                self._emit_room(room_id, "notice",
                                envelope("notice", ts, "connect", room_id, data=dict(data)),
                                skip=[conn])

    def _on_parted(self, event: Dict[str, Any]) -> None:
        socket = self._sockets.get(event["connection"])
        if socket is not None:
            socket.leave(room_name(event["room"]))
        if event["gone"]:
            self._departed(event)

    def _on_left(self, event: Dict[str, Any]) -> None:
        self._departed(event)

    def _departed(self, event: Dict[str, Any]) -> None:
        # ILIAS 10 sends the room id as a string here (spec §10.2).
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        key = str(room_id)
        self._userlist_changed(view, key, ts)
        if not self._in_crowd(view):
            self._emit_room(room_id, "notice", envelope("notice", ts, "disconnected", key,
                                                        data={"username": member["name"]}))

    def _on_room_left(self, event: Dict[str, Any]) -> None:
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        sids = self.sockets_of([member["id"]])
        if sids:
            self._leave(sids, room_id)
            self._emit_to(sids, "notice", envelope("notice", ts, "left", room_id))
            self._emit_to(sids, "userlist", self._userlist_payload(view, room_id, ts))
        self._userlist_changed(view, room_id, ts)
        self._emit_room(room_id, "notice",
                        envelope("notice", ts, "private_room_left", room_id,
                                 data={"user": member["name"], "title": event["title"]}))

    def _on_kicked(self, event: Dict[str, Any]) -> None:
        room_id, ts, member = event["room"], event["ts"], event["member"]
        view = self._view(room_id)
        self._absent(view, member["id"])
        sids = self.sockets_of([member["id"]])
        if sids:
            self._emit_to(sids, "userjustkicked",
                          envelope("userjustkicked", ts, "userjustkicked", room_id))
            self._emit_to(sids, "notice",
                          envelope("notice", ts, "kicked_from_private_room", room_id,
                                   data={"title": event["title"]}))
            self._leave(sids, room_id)
        self._userlist_changed(view, room_id, ts)
        self._emit_room(room_id, "notice", envelope("notice", ts, "user_kicked", room_id,
                                                    data={"user": member["name"]}))

    def _on_banned(self, event: Dict[str, Any]) -> None:
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
            self._emit_room(room_id, "notice", envelope("notice", ts, "user_kicked", key,
                                                        data={"user": member["name"]}))
        for other in event["rooms"]:
            view = self._view(other)
            self._absent(view, user_id)
            self._userlist_changed(view, other, ts)
        # The domain logged these sockets out: nothing meant for the member reaches them now.
        self._by_user.pop(user_id, None)

    def _on_cleared(self, event: Dict[str, Any]) -> None:
        room_id, ts = event["room"], event["ts"]
        self._emit_room(room_id, "clear", envelope("clear", ts, "history_has_been_cleared", room_id))
        self._emit_room(room_id, "notice",
                        envelope("notice", ts, "history_has_been_cleared", room_id))

    def _on_invited(self, event: Dict[str, Any]) -> None:
        room_id, ts, title = event["room"], event["ts"], event["title"]
        host, invitee = event["host"], event["invitee"]
        self._emit_to(self.sockets_of([host["id"]]), "notice",
                      envelope("notice", ts, "user_invited", room_id,
                               data={"user": invitee["name"], "room": title}))
        sids = self.sockets_of([invitee["id"]])
        self._emit_to(sids, "user_invited",
                      envelope("user_invited", ts, "user_invited", room_id, title=title,
                               owner=event["owner"]))
        self._emit_to(sids, "notice",
                      envelope("notice", ts, "user_invited_self", room_id,
                               data={"user": host["name"], "room": title}))

    def _on_renamed(self, event: Dict[str, Any]) -> None:
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

    def _on_message(self, event: Dict[str, Any]) -> None:
        payload = message_payload(event)
        target = event["target"]
        if target is None or target["public"]:
            self._emit_room(event["room"], "message", payload)
        else:
            self._emit_to(self.sockets_of([event["sender"]["id"], target["id"]]), "message",
                          payload)

    def _on_typing(self, event: Dict[str, Any]) -> None:
        started, member = event["started"], event["member"]
        kind = "user_started_typing" if started else "user_stopped_typing"
        name = "userStartedTyping" if started else "userStoppedTyping"
        sids = self.sockets_of(event["recipients"])
        if sids:
            self._emit_to(sids, name, envelope(
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

    @staticmethod
    def _userlist_payload(view: _RoomView, key: RoomKey, ts: int) -> Dict[str, Any]:
        return envelope("userlist", ts, "userlist", key, users=view.userlist())

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
