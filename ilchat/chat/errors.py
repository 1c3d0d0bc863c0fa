"""The refusals of the room domain: raised before anything is published."""

__all__ = [
    "ChatError",
    "ContentTooLong",
    "InvalidInput",
    "NotInRoom",
    "NotLoggedIn",
    "UnknownRoom",
    "UnknownUser",
]


class ChatError(Exception):
    """A request the domain refuses; C{code} is a short machine-readable reason."""

    code = "error"


class NotLoggedIn(ChatError):
    """The connection has not logged in (or its member was banned/forgotten)."""

    code = "not_logged_in"


class UnknownRoom(ChatError):
    """No room with that id in this instance."""

    code = "unknown_room"


class UnknownUser(ChatError):
    """No member with that id in this instance (or not in that room)."""

    code = "unknown_user"


class NotInRoom(ChatError):
    """The connection (or member) is not in the room it tries to act in."""

    code = "not_in_room"


class InvalidInput(ChatError):
    """An argument has the wrong type or shape."""

    code = "invalid_input"


class ContentTooLong(ChatError):
    """
    The message would not fit into the history store; it was not delivered. C{fits} is how many
    characters of content the same message could have had (plain text; None when unknown).
    """

    code = "message_too_long"

    def __init__(self, message: str, fits: "int | None" = None) -> None:
        super().__init__(message)
        self.fits = fits
