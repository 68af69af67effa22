"""Where the broker listens when nothing says otherwise: the same rule as
the broker and the Rust client (``proto/src/endpoint.rs``).

Resolution order: the ``socket=`` argument, else ``TURNSTILE_SOCKET`` (when
set and non-empty), else :func:`default_socket`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Union

__all__ = ["SOCKET_ENV", "default_socket", "socket_from_env", "resolve_socket"]

#: The environment variable that names the socket when ``socket=`` is absent.
SOCKET_ENV = "TURNSTILE_SOCKET"


def default_socket() -> str:
    """The socket a broker serves when nothing says otherwise.

    ``$XDG_RUNTIME_DIR/turnstile.sock``; else ``/run/turnstile/turnstile.sock``
    for root; else ``/tmp/turnstile-$UID/turnstile.sock``. On Windows the
    named pipe ``\\\\.\\pipe\\turnstile``.
    """
    if sys.platform == "win32":
        return r"\\.\pipe\turnstile"
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        return os.path.join(runtime, "turnstile.sock")
    uid = os.getuid()
    if uid == 0:
        return "/run/turnstile/turnstile.sock"
    return f"/tmp/turnstile-{uid}/turnstile.sock"


def socket_from_env() -> str:
    """The socket named by ``TURNSTILE_SOCKET``, else :func:`default_socket`."""
    named = os.environ.get(SOCKET_ENV, "")
    return named if named else default_socket()


def resolve_socket(socket: Optional[Union[str, "os.PathLike[str]"]]) -> str:
    """``socket`` when given, else :func:`socket_from_env`."""
    if socket is None:
        return socket_from_env()
    return os.fspath(socket)
