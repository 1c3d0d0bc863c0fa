"""
Component factories that choose between variants, so that ``ilchat.service`` names one entry.

``room_chat`` is the room chat of a client config: the standalone chat when the config has a
``standalone`` block, else the ILIAS repository chat. Neither variant knows the other.
"""

from typing import Any

__all__ = ["room_chat"]


def room_chat(client: Any) -> Any:
    """The factory named in ``ilchat.service.CLIENT_COMPONENTS`` (``factory(ClientContext)``)."""
    if getattr(client.config, "standalone", None) is not None:
        from ilchat.standalone.chat import StandaloneChat

        return StandaloneChat(client, policy=getattr(client, "policy", None))
    from ilchat.ilias.repository import RepositoryChat

    return RepositoryChat(client)
