# -*- test-case-name: tests.web.test_backend -*-
"""
The twisted.web resource tree of one listening port.

::

    /backend/...                       BackendResource (ILIAS PHP)
    /socket.io/                        the Socket.IO server (browsers)
    <sub_directory>/backend/...        the same backend, for proxies that keep the prefix
    <sub_directory>/socket.io/         the Socket.IO path ILIAS gives the browsers

Other parts add their own children to ``root`` (for instance the standalone web client) through
``WebRoot.put``.
"""

from typing import Optional

from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site


class _Folder(Resource):
    """A node of the tree; unknown children get an escaped 404 page, never a traceback."""

    def getChild(self, path: bytes, request) -> IResource:  # noqa: N802 (twisted API)
        return pages.notFound()

    def render(self, request) -> bytes:
        if b"" in self.children and not request.path.endswith(b"/"):
            # A folder with an index page (the standalone chat at <sub_directory>/): add the
            # slash, so that the page's relative links resolve inside the folder.
            request.redirect(request.path + b"/")
            return b""
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Not found\n"


class WebRoot:
    """
    The root of the tree plus the ``sub_directory`` folder, so that a resource can be mounted at
    both places with one call.
    """

    def __init__(self, sub_directory: str = "") -> None:
        self.root = _Folder()
        self.sub_directory = sub_directory
        self.sub: Optional[Resource] = None
        node: Resource = self.root
        for segment in [s for s in sub_directory.split("/") if s]:
            child = _Folder()
            node.putChild(segment.encode("utf-8"), child)
            node = child
        if node is not self.root:
            self.sub = node

    def put(self, name: str, resource: IResource, root: bool = True, sub: bool = True) -> None:
        """Mount ``resource`` at ``/<name>`` and/or ``<sub_directory>/<name>``."""
        if root:
            self.root.putChild(name.encode("utf-8"), resource)
        if sub and self.sub is not None:
            self.sub.putChild(name.encode("utf-8"), resource)


def make_site(web_root: WebRoot) -> Site:
    """A Site that never shows tracebacks to clients (they go to the error log)."""
    site = Site(web_root.root)
    site.displayTracebacks = False
    return site
