"""
The standalone internal chat: no ILIAS, users pick a name on the built-in web page (or on IRC).

See L{ilchat.standalone.chat}.
"""

from ilchat.standalone.chat import StandaloneChat, validate_name

__all__ = ["StandaloneChat", "validate_name"]
