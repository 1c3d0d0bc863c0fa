# -*- test-case-name: tests.chat.test_claims -*-
"""
Why each process keeps a member it does not hold itself: the instances that *claim* them.

A process keeps a L{Member} for the users it has a first-hand reason for (PHP connected or
admitted them here, or a connection of theirs logged in here), and for users another instance
has such a reason for: PHP's Connect may go to one process and the browser to another. The
second kind must be forgotten once no instance claims them any more, or every process would
keep every user it ever heard of.

An instance's claim on a member starts with its own ``connected``, ``admitted``, ``entered`` or
``invited`` event, and ends with its ``released`` (it forgot the member, or keeps them only
because another instance claims them), with a ``snapshot`` that does not claim them, or with its
departure. A claim is recorded only by its own instance's events, which reach every process in
that instance's order, so every process agrees on who claims whom once the bus is quiet,
whatever order the events of different instances arrive in.

Like L{ilchat.chat.cluster_presence}, a departed instance's claims become its previous run's
(``"<name>~"``) until its departure's grace ends, so that a new run under the same name starts
with claims of its own.
"""

from typing import Dict, Iterable, List, Set

from ilchat.chat.cluster_presence import previous_run

__all__ = ["MemberClaims"]


class MemberClaims:
    """Per member id, the holder keys (instance names, or L{previous_run} names) claiming them."""

    __slots__ = ("_claims",)

    def __init__(self) -> None:
        self._claims: Dict[int, Set[str]] = {}

    def claimed(self, user_id: int) -> bool:
        return bool(self._claims.get(user_id))

    def holders(self, user_id: int) -> Set[str]:
        return set(self._claims.get(user_id, ()))

    def has(self, user_id: int, key: str) -> bool:
        return key in self._claims.get(user_id, ())

    def claimed_by(self, key: str) -> List[int]:
        """The member ids C{key} claims, ascending."""
        return sorted(user_id for user_id, keys in self._claims.items() if key in keys)

    def add(self, user_id: int, key: str) -> None:
        self._claims.setdefault(user_id, set()).add(key)

    def discard(self, user_id: int, key: str) -> bool:
        """C{key} lets go of the member; True when C{key} had claimed them."""
        keys = self._claims.get(user_id)
        if keys is None or key not in keys:
            return False
        keys.discard(key)
        if not keys:
            del self._claims[user_id]
        return True

    def forget(self, user_id: int) -> None:
        """Nobody claims the member any more (a ban: every process forgets them)."""
        self._claims.pop(user_id, None)

    def replace(self, key: str, user_ids: Iterable[int]) -> List[int]:
        """C{user_ids} is everything C{key} claims now; the member ids it no longer claims."""
        wanted = set(user_ids)
        dropped = [user_id for user_id in self.claimed_by(key) if user_id not in wanted]
        for user_id in dropped:
            self.discard(user_id, key)
        for user_id in wanted:
            self.add(user_id, key)
        return dropped

    def depart(self, instance: str) -> None:
        """What C{instance} claims becomes what its previous run claimed."""
        old = previous_run(instance)
        for keys in self._claims.values():
            if instance in keys:
                keys.discard(instance)
                keys.add(old)

    def end(self, key: str) -> List[int]:
        """Every claim of C{key} ends; the member ids it claimed."""
        ended = self.claimed_by(key)
        for user_id in ended:
            self.discard(user_id, key)
        return ended
