# -*- test-case-name: tests.chat.test_cluster_presence -*-
"""
Who is present in each room across the processes of a cluster, from the room events alone.

Presence is owned per instance: a member is present in a room on an instance while that
instance has one of their connections in it, and the events an instance publishes say when
*its* holding starts (``entered``) and ends (``parted`` with ``gone``, ``left``). L{ClusterPresence}
keeps, per (room, member), the set of instances holding them; the cluster view is the union:
a member appears when the first instance holds them and disappears when the last lets go. Each
(room, member, instance) triple changes only through that instance's own events, which reach
every process in that instance's order, so every process converges to the same view. Without
Redis there is one instance and this is exactly the old per-event presence.

Whoever keeps presence for itself (the renderer's userlists, the IRC bridge's channel members,
the metrics, and the domain for ``GetRooms`` and bans) feeds every envelope of ``room:<name>``
to its own L{ClusterPresence} and acts on the changes L{ClusterPresence.apply} returns:
``(room, member, present)``, where ``member`` is the event's ``{"id", "name", "picture"}``:

* ``entered``: present, when no instance held the member in that room before;
* ``parted`` (``gone``), ``left``: absent, when no instance holds the member there afterwards
  (a ``left`` for a member that was only admitted counts too, as it always did);
* ``room_left``, ``kicked``: absent (PHP's actions take every connection out, cluster-wide);
* ``banned``: absent from the event's rooms and every room the member is present in;
* ``room_deleted`` (an ILIAS 8 private room): everyone present there is absent;
* ``snapshot`` and a non-fresh ``sync_request``: what the sender holds *replaces* what was
  recorded for it (a set difference both ways; renderers apply these silently);
* ``instance_stopping`` and a fresh ``sync_request`` (a process started again under the same
  name): the sender's holdings (for ``instance_stopping``, first replaced by the ones it carries,
  as a ``snapshot``'s) become the holdings of its previous run, ``"<name>~"``, until
  the ``left`` events of its departure (``instance``: the name) end them. So a user who
  reconnects elsewhere (or to the restarted process) within the grace never disappears.

A ``left`` with an ``instance`` field (published by the one process that handles a departure)
ends that instance's previous-run holding if there is one (and with ``whole`` its holding too:
a run started again and gone again before the end of the grace), else its holding (it died
without a word and has not started again); a ``left`` without one ends the origin's holding. A process
started again under a departed name gives its own name as C{own}: what it holds now is never
its previous run's.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

__all__ = ["ClusterPresence", "Change", "previous_run"]

Change = Tuple[int, Dict[str, Any], bool]

_KINDS = frozenset((
    "entered", "parted", "left", "room_left", "kicked", "banned", "snapshot", "sync_request",
    "instance_stopping", "renamed", "room_deleted",
))


def previous_run(instance: str) -> str:
    """The holder key of what C{instance} held before it stopped or started again."""
    return instance + "~"


def _member(info: Mapping[str, Any]) -> Dict[str, Any]:
    return {"id": info["id"], "name": info.get("name"), "picture": bool(info.get("picture"))}


class ClusterPresence:
    """Per (room, member) the instances holding them (see the module docstring)."""

    __slots__ = ("_held", "_rooms_of", "_info", "_own", "_ended")

    def __init__(self, own: Optional[str] = None) -> None:
        self._own = own
        # room -> member id -> holder keys (instance names, or previous_run(name))
        self._held: Dict[int, Dict[int, Set[str]]] = {}
        # member id -> rooms they are present in; member id -> their latest {id, name, picture}
        self._rooms_of: Dict[int, Set[int]] = {}
        self._info: Dict[int, Dict[str, Any]] = {}
        # instance -> (room, member) pairs whose previous-run holding was ended here before the
        # ``left`` of the process handling its departure came (L{end_previous})
        self._ended: Dict[str, Set[Tuple[int, int]]] = {}

    # -- reading ---------------------------------------------------------------------------

    def is_present(self, room_id: int, user_id: int) -> bool:
        return user_id in self._held.get(room_id, ())

    def present(self, room_id: int) -> List[Dict[str, Any]]:
        """The members present in a room, ascending ids."""
        return [self._info[user_id] for user_id in sorted(self._held.get(room_id, ()))]

    def member(self, user_id: int) -> Dict[str, Any]:
        """The latest ``{"id", "name", "picture"}`` of a member present somewhere."""
        return self._info[user_id]

    def count(self, room_id: int) -> int:
        return len(self._held.get(room_id, ()))

    def rooms_of(self, user_id: int) -> List[int]:
        """The rooms the member is present in, ascending."""
        return sorted(self._rooms_of.get(user_id, ()))

    def holders(self, room_id: int, user_id: int) -> Set[str]:
        return set(self._held.get(room_id, {}).get(user_id, ()))

    def held_by(self, key: str) -> List[Tuple[int, int]]:
        """The (room, member id) pairs a holder key holds, sorted."""
        return sorted((room_id, user_id) for room_id, members in self._held.items()
                      for user_id, keys in members.items() if key in keys)

    def held_by_others(self, instance: str) -> Dict[str, List[Tuple[int, int]]]:
        """
        Per other instance, the (room, member id) pairs it (or its previous run) holds, sorted:
        what C{instance} knows of the others' holdings.
        """
        others: Dict[str, Set[Tuple[int, int]]] = {}
        for room_id, members in self._held.items():
            for user_id, keys in members.items():
                for key in keys:
                    name = key[:-1] if key.endswith("~") else key
                    if name != instance:
                        others.setdefault(name, set()).add((room_id, user_id))
        return {name: sorted(pairs) for name, pairs in sorted(others.items())}

    def held_elsewhere(self, user_id: int, instance: str) -> bool:
        """Whether any holder but C{instance} holds the member in any room."""
        return any(self._held[room_id][user_id] - {instance}
                   for room_id in self._rooms_of.get(user_id, ()))

    def copy(self) -> "ClusterPresence":
        other = ClusterPresence(self._own)
        other._held = {room: {user: set(keys) for user, keys in members.items()}
                       for room, members in self._held.items()}
        other._rooms_of = {user: set(rooms) for user, rooms in self._rooms_of.items()}
        other._info = {user: dict(info) for user, info in self._info.items()}
        other._ended = {name: set(pairs) for name, pairs in self._ended.items()}
        return other

    # -- changing --------------------------------------------------------------------------

    def apply(self, envelope: Mapping[str, Any]) -> List[Change]:
        """Apply one bus envelope of the room topic; the changes of the cluster view."""
        return self.apply_event(envelope["origin"], envelope["event"])

    def apply_event(self, origin: str, event: Mapping[str, Any]) -> List[Change]:
        """Apply C{event} published by C{origin}; the changes of the cluster view."""
        kind = event.get("type")
        if kind not in _KINDS:
            return []  # messages, typing...: the hot path stays one set lookup
        if kind == "entered":
            member = _member(event["member"])
            return [(event["room"], member, True)] if self.add(event["room"], member, origin) else []
        if kind == "parted":
            if not event["gone"]:
                return []
            return self._end(event["room"], event["member"], origin)
        if kind == "left":
            key = event.get("instance")
            pair = (event["room"], event["member"]["id"])
            if key is None:
                key = origin
            elif key == self._own or self.is_held(pair[0], pair[1], previous_run(key)) \
                    or pair in self._ended.get(key, ()):
                self._ended.get(key, set()).discard(pair)
                if event.get("whole") and key != self._own:
                    self.discard(pair[0], pair[1], key)  # and its later run's, gone as well
                key = previous_run(key)
            return self._end(event["room"], event["member"], key)
        if kind in ("room_left", "kicked"):
            self._clear(event["room"], event["member"]["id"])
            return [(event["room"], _member(event["member"]), False)]
        if kind == "banned":
            member, user_id = _member(event["member"]), event["member"]["id"]
            rooms = [] if event["room"] is None else [event["room"]]
            for room_id in list(event["rooms"]) + self.rooms_of(user_id):
                if room_id not in rooms:
                    rooms.append(room_id)
            for room_id in rooms:
                self._clear(room_id, user_id)
            return [(room_id, member, False) for room_id in rooms]
        if kind == "room_deleted":
            room_id = event["room"]
            gone = [dict(self._info[user_id]) for user_id in sorted(self._held.get(room_id, ()))]
            for info in gone:
                self._clear(room_id, info["id"])
            return [(room_id, info, False) for info in gone]
        if kind == "renamed":
            user_id = event["member"]["id"]
            if user_id in self._info:
                self._info[user_id] = _member(event["member"])
            return []
        if kind == "instance_stopping" or (kind == "sync_request" and event.get("fresh")):
            changes = []
            if kind == "instance_stopping" and "held" in event:
                changes = self.replace(origin, event["held"], event.get("members", ()))
            self.depart(origin)
            return changes
        if kind in ("snapshot", "sync_request"):
            return self.replace(origin, event.get("held", ()), event.get("members", ()))
        return []

    def is_held(self, room_id: int, user_id: int, key: str) -> bool:
        return key in self._held.get(room_id, {}).get(user_id, ())

    def add(self, room_id: int, member: Mapping[str, Any], key: str) -> bool:
        """C{key} holds the member in the room; True when they were not present before."""
        user_id = member["id"]
        self._info[user_id] = _member(member)
        members = self._held.setdefault(room_id, {})
        keys = members.get(user_id)
        if keys is None:
            members[user_id] = {key}
            self._rooms_of.setdefault(user_id, set()).add(room_id)
            return True
        keys.add(key)
        return False

    def discard(self, room_id: int, user_id: int, key: str) -> bool:
        """C{key} lets go; True when the member was present and no holder is left."""
        members = self._held.get(room_id)
        keys = members.get(user_id) if members is not None else None
        if keys is None:
            return False
        keys.discard(key)
        if keys:
            return False
        self._clear(room_id, user_id)
        return True

    def end_previous(self, room_id: int, user_id: int, instance: str) -> None:
        """
        End C{instance}'s previous-run holding ahead of the ``left`` that the process handling
        its departure publishes: that ``left`` then ends nothing more (not what a new run of
        C{instance} holds by now).
        """
        self.discard(room_id, user_id, previous_run(instance))
        self._ended.setdefault(instance, set()).add((room_id, user_id))

    def depart(self, instance: str) -> None:
        """What C{instance} holds becomes what its previous run held (see the docstring)."""
        old = previous_run(instance)
        for members in self._held.values():
            for keys in members.values():
                if instance in keys:
                    keys.discard(instance)
                    keys.add(old)

    def replace(self, instance: str, held: Iterable[Any], members: Iterable[Any]) -> List[Change]:
        """
        C{held} (``[room, member id]`` pairs, whose members are in C{members}) is everything
        C{instance} holds now.
        """
        infos = {info["id"]: _member(info) for info in members}
        wanted = {(int(pair[0]), int(pair[1])) for pair in held}
        changes: List[Change] = []
        for room_id, user_id in self.held_by(instance):
            if (room_id, user_id) not in wanted:
                info = self._info[user_id]
                if self.discard(room_id, user_id, instance):
                    changes.append((room_id, info, False))
        for room_id, user_id in sorted(wanted):
            info = infos.get(user_id) or self._info.get(user_id) or _member({"id": user_id})
            if self.add(room_id, info, instance):
                changes.append((room_id, self._info[user_id], True))
        return changes

    # -- internals -------------------------------------------------------------------------

    def _end(self, room_id: int, info: Mapping[str, Any], key: str) -> List[Change]:
        self.discard(room_id, info["id"], key)
        if self.is_present(room_id, info["id"]):
            return []
        return [(room_id, _member(info), False)]

    def _clear(self, room_id: int, user_id: int) -> None:
        members = self._held.get(room_id)
        if members is None or members.pop(user_id, None) is None:
            return
        if not members:
            del self._held[room_id]
        rooms = self._rooms_of.get(user_id)
        if rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._rooms_of[user_id]
                self._info.pop(user_id, None)
