# -*- test-case-name: tests.irc.test_auth -*-
"""
Password checks for IRC users in ``ilias`` auth mode, against ILIAS's own ``usr_data``, and
the logins that guests (``irc`` → ``guests``) may not take as nicks.

ILIAS stores passwords with its ``bcryptphp`` encoder: PHP's ``password_hash`` with
``PASSWORD_BCRYPT``, i.e. a ``$2y$`` bcrypt hash in ``usr_data.passwd`` and
``passwd_enc_type = 'bcryptphp'``. We only read ``usr_data`` (through the store), never write it.

bcrypt is deliberately slow (tens to hundreds of milliseconds), so every hash check runs in the
reactor's thread pool. A login that does not exist (or is inactive, or has another encoding) still
costs one bcrypt run against a dummy hash, so that timing does not tell which logins exist; the
comparison itself is bcrypt's constant-time check.
"""

from typing import Any, List, Optional, Sequence, Tuple

import attr
import bcrypt
from twisted.internet import threads
from twisted.logger import Logger

__all__ = ["Identity", "IliasAuthenticator", "check_bcryptphp"]

# A valid $2y$ hash of a random password, used to spend the same time on unknown logins.
_DUMMY_HASH = b"$2y$10$mv4GWsSwHr/RGfPbjLyMnuqvPtrAxprOrWHb5VuB7bmSBpQbNKGZi"


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Identity:
    """An authenticated IRC user: the ILIAS usr_id and login, and the client they belong to."""

    user_id: int
    login: str
    client: Optional[str] = None


def check_bcryptphp(password: str, stored_hash: Optional[str]) -> bool:
    """
    Whether C{password} matches an ILIAS ``bcryptphp`` hash (runs bcrypt: call it in a thread).

    PHP's C{password_verify} uses only the first 72 bytes of the password, so we do too.
    """
    candidate = password.encode("utf-8")[:72]
    if not stored_hash or not stored_hash.startswith(("$2y$", "$2a$", "$2b$")):
        try:
            bcrypt.checkpw(candidate, _DUMMY_HASH)
        except ValueError:
            pass
        return False
    try:
        return bcrypt.checkpw(candidate, stored_hash.encode("ascii"))
    except ValueError:
        return False


class IliasAuthenticator:
    """
    Checks a login and password against the ``usr_data`` of the exposed ILIAS clients.

    Args:
        stores: C{(client name, store)} pairs, tried in order; the first client whose
            ``usr_data`` accepts the login and password is the user's client.
        reactor: its thread pool runs bcrypt.
    """

    _log = Logger()

    def __init__(self, stores: Sequence[Tuple[str, Any]], reactor: Any) -> None:
        self._stores: List[Tuple[str, Any]] = list(stores)
        self._reactor = reactor

    async def authenticate(self, login: str, password: str) -> Optional[Identity]:
        """The L{Identity} for a correct login and password of an active account, else None."""
        if not login or not password:
            return None
        for client, store in self._stores:
            try:
                row = await store.get_login(login)
            except Exception:
                self._log.failure("Cannot look up IRC login {login!r} in {client}", login=login, client=client)
                continue
            usable = (
                row is not None
                and row.get("active")
                and (row.get("passwd_enc_type") or "") == "bcryptphp"
            )
            stored = row.get("passwd") if usable else None
            ok = await threads.deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), check_bcryptphp, password, stored
            )
            if ok and row is not None:
                self._log.debug("IRC password of {login} ({client}) checked", login=row["login"], client=client)
                return Identity(user_id=int(row["usr_id"]), login=row["login"], client=client)
        # Failures are logged by the login throttle (ilchat.irc.throttle), once per burst and
        # with the address; the connection's login line names the account on success.
        return None

    async def is_login(self, name: str) -> bool:
        """
        Whether C{name} is the login of an account (active or not) of an exposed client, as
        ``usr_data`` compares logins: a guest may not take it as a nick. A client whose
        database cannot be read now counts as having it (refused rather than impersonated).
        """
        for client, store in self._stores:
            try:
                if await store.get_login(name) is not None:
                    return True
            except Exception:
                self._log.failure("Cannot look up IRC login {login!r} in {client}", login=name, client=client)
                return True
        return False
