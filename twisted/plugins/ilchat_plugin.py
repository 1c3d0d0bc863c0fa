"""
``twistd ilchat``: the ILIAS chat server.

Both command-line forms work, so that a systemd unit of the Node server only swaps the program::

    twistd -n ilchat --server-cfg server.cfg --client-cfg a.cfg [--client-cfg b.cfg ...]
    twistd -n ilchat server.cfg a.cfg [b.cfg ...]

This module is imported whenever twistd looks for plugins, so it imports nothing heavy: the
service is built by ``ilchat.service`` only when ``ilchat`` is the chosen command.
"""

import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    """Command line of ``twistd ilchat``; the config files are loaded and checked here."""

    synopsis = "[--server-cfg SERVER_CFG --client-cfg CLIENT_CFG ...] | [SERVER_CFG CLIENT_CFG ...]"
    optParameters = [
        ["server-cfg", "s", None, "Path to the ILIAS server.cfg (JSON)."],
    ]
    longdesc = (
        "Drop-in replacement for the ILIAS chat server (Node.js). Give the server.cfg once and "
        "one client.cfg per ILIAS client, with options or positionally as for the Node server."
    )

    def __init__(self) -> None:
        super().__init__()
        self["client-cfg"] = []

    def opt_client_cfg(self, path: str) -> None:
        """Path to a client.cfg (JSON); repeat it for several ILIAS clients."""
        self["client-cfg"].append(path)

    opt_c = opt_client_cfg

    def parseArgs(self, *paths: str) -> None:  # noqa: N802 (twisted API)
        if paths and self["server-cfg"] is None:
            self["server-cfg"], paths = paths[0], paths[1:]
        self["client-cfg"].extend(paths)

    def postOptions(self) -> None:  # noqa: N802 (twisted API)
        from ilchat.config import ConfigError, load_configs
        from ilchat.logs import open_log_file

        try:
            server, clients = load_configs(self["server-cfg"], self["client-cfg"])
            for path in (server.log, server.error_log):
                try:
                    open_log_file(path).close()
                except OSError as e:
                    raise ConfigError(f"{server.path}: cannot write log file {path}: {e.strerror}")
        except ConfigError as e:
            # One clear line instead of twistd's usage text or a traceback; exit status 1.
            sys.stderr.write(f"{e}\n")
            sys.stderr.flush()
            raise SystemExit(1)
        self["server_config"] = server
        self["client_configs"] = clients


@implementer(IServiceMaker, IPlugin)
class IlchatServiceMaker:
    """Found by twistd's plugin scan; builds the service only when ``ilchat`` is run."""

    tapname = "ilchat"
    description = "ILIAS-compatible chat server (socket.io backend, IRC bridge)."
    options = Options

    def makeService(self, options):  # noqa: N802 (twisted API)
        from ilchat.service import makeService

        return makeService(options)


ilchat = IlchatServiceMaker()
