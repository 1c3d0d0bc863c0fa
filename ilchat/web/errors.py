"""
Errors a backend handler raises to answer with a JSON error instead of a result.

The backend resource maps them to their status code and a ``{"status": code, "message": text}``
body; any other exception becomes a generic 500 whose traceback goes to the error log only.
"""

from typing import Any, Dict, Optional


class HttpError(Exception):
    """An answer other than 200, with a JSON body."""

    code = 500
    default_message = "Internal server error"

    def __init__(self, message: Optional[str] = None, body: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self._body = body

    def body(self) -> Dict[str, Any]:
        if self._body is not None:
            return self._body
        return {"status": self.code, "message": self.message}


class BadRequest(HttpError):
    """A parameter is malformed (HTTP 400)."""

    code = 400
    default_message = "Bad request"


class Forbidden(HttpError):
    """Missing or wrong credentials (HTTP 403). The body is the Node server's."""

    code = 403
    default_message = "Access denied"


class NotFound(HttpError):
    """Unknown client, action, room or user (HTTP 404)."""

    code = 404
    default_message = "Not found"


class MethodNotAllowed(HttpError):
    """Only GET and HEAD exist on the backend (HTTP 405)."""

    code = 405
    default_message = "Method not allowed"
