"""
Start a program the way systemd's socket activation does: ``python -m
tests.support.socket_activation HOST PORT PROGRAM ARGS...`` binds and listens on HOST:PORT, puts
the socket on file descriptor 3, sets ``LISTEN_FDS=1``, ``LISTEN_FDNAMES`` and ``LISTEN_PID`` to its own process id
(which ``exec`` keeps) and replaces itself with PROGRAM.
"""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list) -> None:
    host, port, program = argv[0], int(argv[1]), argv[2:]
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    first = 3  # SD_LISTEN_FDS_START
    if listener.fileno() != first:
        os.dup2(listener.fileno(), first, inheritable=True)
        listener.close()
    else:
        os.set_inheritable(first, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    # systemd 227 and later name every socket (FileDescriptorName=, else the unit's name), and
    # Twisted takes the descriptors only when the names are there too.
    os.environ["LISTEN_FDNAMES"] = "ilchat.socket"
    os.execv(program[0], program)


if __name__ == "__main__":
    main(sys.argv[1:])
