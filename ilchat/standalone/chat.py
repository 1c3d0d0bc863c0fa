# -*- test-case-name: tests.standalone.test_chat -*-
"""
The standalone chat: the repository chat of a ``client.cfg`` that has a ``standalone`` block.

Its page speaks the ILIAS repository chat's events, so it shares their namespace adapter
(L{ilchat.ilias.room_namespace.RoomNamespace}: the same domain, socket events, rendering and
backend actions) with the ILIAS repository chat, without being one (no ILIAS identity, no PHP
names); what PHP would do is done here instead:

* the rooms come from the config and are created in the client's (SQLite) store at start;
* ``login(name[, token])`` takes a name only. A valid name is 1 to ``max_name_length`` characters
  once trimmed, with no control or invisible formatting characters, and not in use by anyone
  online in the web chat or on IRC (``ChatRooms.name_in_use``), nor held by a member on another
  process (``cluster.claim``; released when the member is gone). The member gets a positive id
  of its own, unique across the processes (IRC users have negative ones) that stays the same
  for the connection, and is made a
  member of every configured room (what PHP's ``Connect`` and ``EnterPrivateRoom`` do). The answer
  is ``loggedIn({id, username, token, rooms})`` or ``loginFailed({error, message})``.
* ``token`` lets a page that lost its connection take its name back while the member is still
  in its disconnect grace (a network hiccup, a reload); without it the name stays taken for
  those 15 seconds.
* a newcomer to a room gets ``history({roomId, messages})``: the room's latest messages, oldest
  first, with millisecond timestamps. They are kept in memory per room (loaded from
  ``chatroom_history`` at start, then fed from the bus), so a join costs no query and no message
  falls between the history and the live stream.
* limits: messages longer than ``max_message_length`` and messages over the per-connection
  throttle (token bucket, ``message_rate``/``message_burst``) are refused with
  ``refused({error, message, roomId, content, ...})``, never dropped silently: ``content`` is the
  refused text, so that the page can put it back into the input box. Typing notices over their
  own (looser) throttle are dropped without an answer: they are best effort, and an answer would
  crowd out the refusal of a message.
* ``leave()``: the person leaves on purpose (the page's "Leave" button, or a page being closed):
  the domain's ``connection_closed`` takes them out of every room at once, without the disconnect
  grace that keeps a dropped connection's name for 15 s; the socket is then disconnected.
* ``rename(name)``: a new name, under the login's rules (``refused`` ``invalid_name`` or
  ``name_taken`` otherwise), claimed in the cluster before the old one is released; the domain
  publishes ``renamed``.
* every ``renamed`` event (a web rename or an IRC ``NICK``) reaches the logged-in pages as
  ``renamed({id, username, timestamp})``: the page updates its people lists and says so in the
  rooms.
* with ``files_folder`` set, files are shared over HTTP (L{ilchat.standalone.files}): an upload
  names its member by the login's token and becomes a message of that member in the room.
"""

from __future__ import annotations

import collections
import secrets
import unicodedata
from typing import Any, Deque, Dict, List, Optional, Sequence

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from ilchat.chat.rooms import ChatError
from ilchat.ilias.rendering import message_payload
from ilchat.ilias.room_namespace import RoomNamespace, _in_order
from ilchat.jsonutil import JSONError, dumps, loads
from ilchat.standalone.files import (
    FilesResource,
    SharedFiles,
    UploadRefused,
    file_path,
    file_payload,
    human_size,
    upload_name,
    upload_type,
)
from ilchat.web.client import ChatPageResource, PageSettings, mount_chat_page
from ilchat.web.policy import NetworkPolicy, TokenBucket

__all__ = ["StandaloneChat", "validate_name"]

# Unicode categories a name may not contain: controls, invisible formatting characters (zero-width
# joiners, bidi overrides that make a name look like another), separators other than the space,
# unassigned and private-use code points, surrogates.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def validate_name(raw: Any, max_length: int) -> tuple[Optional[str], Optional[str]]:
    """
    Check a name picked on the login screen.

    Returns:
        ``(name, None)`` with the trimmed name, or ``(None, reason)`` with a sentence for the user.
    """
    if not isinstance(raw, str):
        return None, "A name must be text."
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        return None, "Please enter a name."
    if len(name) > max_length:
        return None, f"A name has at most {max_length} characters."
    for char in name:
        if char.isspace() and char != " ":
            return None, "A name cannot contain tabs or line breaks."
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return None, "A name cannot contain control or invisible characters."
    if "  " in name:
        return None, "A name cannot contain several spaces in a row."
    return name, None


class StandaloneChat(RoomNamespace):
    """
    The standalone chat of one client config, as a service component.

    Args:
        client: the ``ilchat.service.ClientContext``; ``client.config.standalone`` is set.
        policy: the process's L{NetworkPolicy}, for the limits; built from server.cfg when
            absent.
        grace: the disconnect grace in seconds.
    """

    _log = Logger()

    def __init__(self, client: Any, policy: Optional[NetworkPolicy] = None, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.settings = client.config.standalone
        if policy is None:
            policy = NetworkPolicy.from_config(client.server_config.network, clock=client.reactor)
        self.policy = policy
        self.page: Optional[ChatPageResource] = None
        #: Member ids unique across the cluster (``ilchat.cluster`` ``ids``), above every id the
        #: store holds (a Redis that restarted empty, or a process alone, starts over at 1).
        self._ids = client.cluster.ids(f"standalone-user:{self.name}", seed=self.store.max_user_id)
        #: Names are claimed in the cluster (casefolded) in this namespace, per member id.
        self._names = f"standalone-name:{self.name}"
        self._claimed: Dict[int, str] = {}
        self._tokens: Dict[int, str] = {}
        self._history: Dict[int, Deque[Dict[str, Any]]] = {}
        self._unsubscribe_history: Optional[Any] = None
        self.files: Optional[SharedFiles] = None
        self._unregister_purge: Optional[Any] = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the configured rooms, load their history, serve the namespace and the page."""
        rooms = self.settings.rooms
        await self._ids.ready()
        added = await self.store.ensure_rooms(room.id for room in rooms)
        for room in rooms:
            # Before RoomNamespace.start preloads the store's rooms: add_room keeps the first title.
            self.chat.add_room(room.id, room.title)
            if self.settings.history:
                self._history[room.id] = collections.deque(maxlen=self.settings.history)
        if added:
            self._log.info("{count} rooms created for {name}", count=added, name=self.name)
        if self.settings.history:
            for room in rooms:
                for row in await self.store.get_history(room.id, self.settings.history):
                    message = _stored_message(row)
                    if message is not None:
                        self._history[room.id].append(message)
        if self.settings.files_folder:
            self.files = SharedFiles(self.settings.files_folder, self.settings.files_max_bytes,
                                     self.settings.files_types)
            await self.files.start()
        await super().start()
        for event, handler in (("leave", self.on_leave), ("rename", self.on_rename)):
            self.namespace.on(event, _in_order(handler))
        # Subscribed after the adapter, so a message is remembered once it has been delivered.
        self._unsubscribe_history = self.client.bus.subscribe(self.chat.topic, self._remember)
        self.page = ChatPageResource(
            PageSettings(
                title=self.settings.title,
                welcome=self.settings.welcome,
                namespace="/" + self.name,
                socketio_path=self.client.server_config.sub_directory + "/socket.io/",
                rooms=[{"id": room.id, "title": room.title} for room in rooms],
                max_name_length=self.policy.max_name_length,
                max_message_length=self.max_message_length,
                window_title=self.settings.window_title,
                info=self.settings.info,
                files=None if self.files is None else {
                    "maxBytes": self.files.max_bytes, "types": sorted(self.files.types)},
            )
        )
        mount_chat_page(self.client.web_root, self.page)
        if self.files is not None:
            web_root = self.client.web_root
            at_root = web_root.sub is None
            web_root.put("files", FilesResource(self.files, self._accept_upload), root=at_root,
                         sub=not at_root)
            self._unregister_purge = self.store.register_history_purge(self.files.remove_older)
        self._log.info(
            "Standalone chat {name} ready: {count} rooms, page at {path}/",
            name=self.name,
            count=len(rooms),
            path=self.client.server_config.sub_directory,
        )

    async def stop(self) -> None:
        if self._unregister_purge is not None:
            self._unregister_purge()
            self._unregister_purge = None
        if self._unsubscribe_history is not None:
            self._unsubscribe_history()
            self._unsubscribe_history = None
        await super().stop()

    @property
    def max_message_length(self) -> int:
        """server.cfg ``network.max_message_length`` (at most 3000, so the stored row fits)."""
        return self.policy.max_message_length

    # -- history ----------------------------------------------------------------------------

    def _remember(self, envelope: Dict[str, Any]) -> None:
        """Keep the latest room-wide messages of each room (bus subscriber)."""
        event = envelope["event"]
        kind = event.get("type")
        if kind == "renamed":
            self._tell_renamed(event)
            return
        if kind not in ("message", "cleared"):
            return
        history = self._history.get(event["room"])
        if history is None:
            return
        if kind == "cleared":
            history.clear()
        elif event["target"] is None or event["target"]["public"]:
            history.append(message_payload(event))

    def _tell_renamed(self, event: Dict[str, Any]) -> None:
        """A member's new name, to every page logged in on this process (they know who it was)."""
        if self.namespace is None or not self._sockets:
            return
        member = event["member"]
        self.namespace.emit("renamed", {"id": member["id"], "username": member["name"],
                                        "timestamp": event["ts"]}, room=sorted(self._sockets))

    # -- socket events ----------------------------------------------------------------------

    def on_login(self, socket: Any, *args: Any) -> None:
        """``login(name[, token])``: ``loggedIn`` or ``loginFailed`` (see the module docstring)."""
        too_many = self.policy.connection_limit_refusal(socket.address)
        if too_many is not None:
            self._login_failed(socket, "too_many_connections", too_many)
            socket.disconnect()
            return
        if socket.sid in self._sockets:
            member = self.chat.member_for(socket.sid)
            if member is not None and args and args[0] == member.name:
                self._logged_in(socket, member)
                return
            self._login_failed(socket, "already_logged_in",
                               "This connection is already logged in; leave the chat first.")
            return
        name, reason = validate_name(args[0] if args else None, self.policy.max_name_length)
        if name is None:
            self._login_failed(socket, "invalid_name", reason)
            return
        token = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        holder = self.chat.member_named(name)
        if holder is not None and token and secrets.compare_digest(
            self._tokens.get(holder.id, ""), token
        ):
            # The same person coming back (reconnect, reload): same id, same name.
            member = self.chat.login(socket.sid, holder.id, holder.name or name)
        elif self.chat.name_in_use(name):
            self._name_taken(socket, name)
            return
        else:
            # A new name: claimed across the cluster first (at once without Redis).
            ensureDeferred(self._claim_and_login(socket, name)).addErrback(
                lambda failure: self._log.failure("Login of {name} failed", failure, name=name))
            return
        self._welcome(socket, member)

    async def _claim_and_login(self, socket: Any, name: str) -> None:
        """A newcomer whose name is free here: theirs once no other process holds it."""
        key = name.casefold()
        if not await self.client.cluster.claim(self._names, key):
            self._name_taken(socket, name)
            return
        if self.chat.name_in_use(name):  # taken here while the claim was on its way (ours)
            self._name_taken(socket, name)
            return
        if not socket.connected or socket.sid in self._sockets:  # gone, or logged in meanwhile
            await self.client.cluster.release(self._names, key)
            return
        user_id = self._allocate_id()
        self._claimed[user_id] = key
        self.chat.connect(user_id)
        for room in self.settings.rooms:
            self.chat.add_room_member(room.id, user_id)
        member = self.chat.login(socket.sid, user_id, name)
        self._tokens[user_id] = secrets.token_urlsafe(18)
        self._record_users(user_id, name)
        self._welcome(socket, member)

    def _welcome(self, socket: Any, member: Any) -> None:
        if member is None:  # cannot happen: connected just before
            self._login_failed(socket, "error", "The login failed; please try again.")
            return
        self.logged_in(socket, member.id)
        socket.data["bucket"] = self.policy.message_bucket()
        # Typing events fan out to the room too; the page sends two per message at most.
        socket.data["typing_bucket"] = TokenBucket(
            self.policy.message_rate * 2, self.policy.message_burst * 2, self.reactor
        )
        self._log.info("{name} ({id}) logged in to {ns} from {address}", name=member.name,
                       id=member.id, ns=self.namespace.name, address=socket.address)
        self._logged_in(socket, member)

    def on_leave(self, socket: Any, *args: Any) -> None:
        """``leave()``: out of every room now (no grace), then disconnected."""
        if self._sockets.pop(socket.sid, None) is not None:
            self.renderer.remove_socket(socket.sid)
            self.chat.connection_closed(socket.sid)
        socket.disconnect()

    def on_rename(self, socket: Any, *args: Any) -> None:
        """``rename(name)``: the logged-in member takes a new name (see the module docstring)."""
        member = self.chat.member_for(socket.sid) if socket.sid in self._sockets else None
        if member is None:
            self._refuse(socket, "not_logged_in", "Please pick a name first.")
            return
        bucket = socket.data.get("bucket")
        if bucket is not None and not bucket.consume()[0]:
            self._refuse(socket, "rate_limited", "You are changing your name too fast. Wait a moment.")
            return
        name, reason = validate_name(args[0] if args else None, self.policy.max_name_length)
        if name is None:
            self._refuse(socket, "invalid_name", reason)
            return
        if name == member.name:
            return
        if self._taken_by_another(member, name):
            self._rename_refused(socket, name)
            return
        key = name.casefold()
        if key == self._claimed.get(member.id):  # the same name in another case: no new claim
            self._rename(socket, member, name)
            return
        ensureDeferred(self._claim_and_rename(socket, member, name)).addErrback(
            lambda failure: self._log.failure("Rename to {name} failed", failure, name=name))

    async def _claim_and_rename(self, socket: Any, member: Any, name: str) -> None:
        """The new name is claimed across the cluster, then the old one is given up."""
        key = name.casefold()
        if not await self.client.cluster.claim(self._names, key):
            self._rename_refused(socket, name)
            return
        if (self._taken_by_another(member, name) or socket.sid not in self._sockets
                or self.chat.get_member(member.id) is not member):
            # Taken here while the claim was on its way, or the member is gone meanwhile.
            await self.client.cluster.release(self._names, key)
            if socket.sid in self._sockets:
                self._rename_refused(socket, name)
            return
        old = self._claimed.get(member.id)
        self._claimed[member.id] = key
        self._rename(socket, member, name)
        if old is not None and old != key:
            await self.client.cluster.release(self._names, old)

    def _taken_by_another(self, member: Any, name: str) -> bool:
        holder = self.chat.member_named(name)
        if holder is not None:
            return holder.id != member.id
        return self.chat.name_in_use(name)

    def _rename_refused(self, socket: Any, name: str) -> None:
        self._refuse(socket, "name_taken",
                     f"The name \u201c{name}\u201d is already in use. Please pick another one.",
                     name=name)

    def _rename(self, socket: Any, member: Any, name: str) -> None:
        old = member.name
        self.chat.login(socket.sid, member.id, name, member.profile_picture_visible)
        self._log.info("{old} ({id}) is now {name} on {ns}", old=old, id=member.id, name=name,
                       ns=self.namespace.name)

    def on_enterRoom(self, socket: Any, *args: Any) -> None:
        """``enterRoom(roomId)``: the room's latest messages first, then the usual answers."""
        if socket.sid in self._sockets and args:
            try:
                room_id = int(args[0])
            except (TypeError, ValueError, OverflowError):
                room_id = None
            room = self.chat.get_room(room_id) if room_id is not None else None
            history = self._history.get(room_id) if room_id is not None else None
            if room is not None and history is not None and socket.sid not in room.connections:
                socket.emit("history", {"roomId": room_id, "messages": list(history)})
        super().on_enterRoom(socket, *args)

    def on_message(self, socket: Any, *args: Any) -> None:
        """``message({content, format}, roomId)``, after the length and rate limits."""
        if socket.sid not in self._sockets:
            self._refuse(socket, "not_logged_in", "Please pick a name first.")
            return
        data = args[0] if args else None
        content = data.get("content") if isinstance(data, dict) else None
        room_id = args[1] if len(args) > 1 else None
        if not isinstance(content, str) or not content.strip():
            self._refuse(socket, "empty_message", "A message cannot be empty.", room_id)
            return
        limit = self.max_message_length
        if len(content) > limit:
            self._refuse(socket, "message_too_long",
                         f"The message is too long: at most {limit} characters.", room_id,
                         max_length=limit, content=content)
            return
        bucket = socket.data.get("bucket")
        if bucket is not None:
            allowed, retry_after = bucket.consume()
            if not allowed:
                wait = max(1, round(retry_after + 0.49))
                self._refuse(socket, "rate_limited",
                             f"You are sending messages too fast; the last one was not sent. "
                             f"Wait {wait} s.", room_id, retry_after=round(retry_after, 2),
                             content=content)
                return
        try:
            super().on_message(socket, *args)
        except ChatError as e:  # pragma: no cover - the adapter already catches these
            self._refuse(socket, e.code, str(e), room_id)

    def _allocate_id(self) -> int:
        """A positive id no member has (the backend's ``Connect`` may have used some)."""
        user_id = self._ids.take()
        while self.chat.get_member(user_id) is not None:
            user_id = self._ids.take()
        return user_id

    # -- backend actions --------------------------------------------------------------------

    def action_ClearMessages(self, client: Any, request: Any, args: List[str]) -> Any:
        """
        ``ClearMessages/<name>/<roomId>/<id>``: as for ILIAS, and since there is no PHP to
        delete the rows, the room's ``chatroom_history`` too (after pending writes), so that the
        history does not come back after a restart.
        """
        body = super().action_ClearMessages(client, request, args)
        room_id = self._room_segments(args, 2)[0]

        async def clear_stored() -> Dict[str, Any]:
            await self.chat.flush_history()
            await self.store.clear_history(room_id)
            if self.files is not None:
                await self.files.remove_room(room_id)
            return body

        return ensureDeferred(clear_stored())

    def _typing(self, socket: Any, args: Sequence[Any], started: bool) -> None:
        """Typing events, within their own (looser) throttle; the excess is dropped unanswered."""
        bucket = socket.data.get("typing_bucket")
        if bucket is not None and not bucket.consume()[0]:
            self._refused(socket, "userStartedTyping" if started else "userStoppedTyping",
                          "too many typing notifications")
            return
        super()._typing(socket, args, started)

    # -- shared files -----------------------------------------------------------------------

    def _accept_upload(self, request: Any, data: bytes) -> Any:
        return ensureDeferred(self._upload(request, data))

    async def _upload(self, request: Any, data: bytes) -> Dict[str, Any]:
        """An upload (see L{ilchat.standalone.files}): stored, then posted as the member's message."""
        assert self.files is not None
        token = (request.getHeader(b"x-ilchat-token") or b"").decode("ascii", "replace")
        member = None
        for user_id, known in list(self._tokens.items()):
            if token and secrets.compare_digest(known, token):
                member = self.chat.get_member(user_id)
        if member is None:
            raise UploadRefused(401, "not_logged_in", "Please join the chat first.")
        try:
            room_id = int((request.args.get(b"room") or [b""])[0])
        except ValueError:
            room_id = None
        room = self.chat.get_room(room_id) if room_id is not None else None
        connection = None if room is None else next(
            (c for c in sorted(member.connections) if c in room.connections), None)
        if room is None or connection is None:
            raise UploadRefused(404, "unknown_room", "You are not in that room.")
        content_type = upload_type(request)
        self.files.check(content_type, data)
        socket = self._sockets.get(connection)
        bucket = socket.data.get("bucket") if socket is not None else None
        if bucket is not None:
            allowed, retry_after = bucket.consume()
            if not allowed:
                raise UploadRefused(429, "rate_limited",
                                    f"You are sending too fast. Wait {max(1, round(retry_after + 0.49))} s.")
        name = upload_name(request)
        meta = await self.files.save(room_id, name, content_type, data,
                                     {"id": member.id, "name": member.name})
        scheme = "https" if request.isSecure() else "http"
        host = (request.getHeader(b"host") or b"localhost").decode("ascii", "replace")
        url = f"{scheme}://{host}{self.client.server_config.sub_directory}/{file_path(meta)}"
        try:
            self.chat.post_message(connection, room_id, f"{name} ({human_size(len(data))}) {url}",
                                   {"file": file_payload(meta)})
        except ChatError as e:
            await self.files.remove(lambda stored: stored.get("id") == meta["id"])
            raise UploadRefused(409, e.code, "The file could not be shared: you left the room.")
        self._log.info("{name} ({id}) shared {file} ({size} bytes) in room {room} of {ns}",
                       name=member.name, id=member.id, file=meta["id"], size=len(data),
                       room=room_id, ns=self.name)
        return {"id": meta["id"], "path": file_path(meta)}

    # -- persistence hooks ------------------------------------------------------------------

    def _member_gone(self, user_id: int, room_ids: List[int]) -> Any:
        self._tokens.pop(user_id, None)
        key = self._claimed.pop(user_id, None)
        if key is not None:
            ensureDeferred(self.client.cluster.release(self._names, key)).addErrback(
                lambda failure: self._log.failure("Could not release the name {key}", failure, key=key))
        return super()._member_gone(user_id, room_ids)

    def _record_users(self, user_id: int, name: str) -> None:
        """``chatroom_users`` rows as PHP writes them on ``Connect`` (moved to sessions later)."""
        userdata = dumps({"login": name, "id": user_id})
        now = int(self.reactor.seconds())

        async def record() -> None:
            for room in self.settings.rooms:
                await self.store.add_chatroom_user(room.id, user_id, userdata, now)

        ensureDeferred(record()).addErrback(
            lambda failure: self._log.failure(
                "Could not record {name} in chatroom_users", failure, name=name
            )
        )

    # -- answers ----------------------------------------------------------------------------

    def _logged_in(self, socket: Any, member: Any) -> None:
        socket.emit("loggedIn", {
            "id": member.id,
            "username": member.name,
            "token": self._tokens.get(member.id),
            "rooms": [{"id": room.id, "title": room.title} for room in self.settings.rooms],
        })

    def _name_taken(self, socket: Any, name: str) -> None:
        self._login_failed(
            socket, "name_taken",
            f"The name \u201c{name}\u201d is already in use. Please pick another one.",
        )

    def _login_failed(self, socket: Any, error: str, message: str) -> None:
        self._log.info("Login on {ns} from {address} refused: {error}",
                       ns=self.namespace.name if self.namespace else self.name,
                       address=socket.address, error=error)
        socket.emit("loginFailed", {"error": error, "message": message})

    def _refuse(self, socket: Any, error: str, message: str, room_id: Any = None,
                **extra: Any) -> None:
        body = {"error": error, "message": message, "roomId": room_id}
        body.update(extra)
        socket.emit("refused", body)


def _stored_message(row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """
    A ``chatroom_history`` row as a live ``message`` payload (timestamp in ms), or None.

    Private (target, not public) messages are left out: the history is for everyone in the room.
    """
    try:
        message = loads(row["message"])
    except JSONError:
        # Not strict JSON (a row stored before ilchat refused NaN and lone surrogates): a
        # newcomer's history without it still encodes.
        return None
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    target = message.get("target")
    if isinstance(target, dict) and not target.get("public"):
        return None
    timestamp = message.get("timestamp", row.get("timestamp"))
    if isinstance(timestamp, (int, float)) and timestamp < 100_000_000_000:
        message["timestamp"] = int(timestamp * 1000)
    return message

