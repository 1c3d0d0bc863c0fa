"""ilchat: a Twisted chat server compatible with the ILIAS chat server, with an IRC bridge."""

__version__ = "0.1.0"
