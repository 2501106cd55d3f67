"""Where the networks keep their files, and the one lock every state change takes.

The registry (slirpy/registry.py, branch nm15) owns `runtime_dir`, `data_dir` and
`state_lock`; this module only names the networks' own files under them, so that every other
module of the package asks here rather than building paths itself.
"""

from __future__ import annotations

import os

from slirpy import registry


def networks_dir() -> str:
    """`<data_dir>/networks`: one JSON definition per network (created 0700)."""
    path = os.path.join(registry.data_dir(), "networks")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def holder_file() -> str:
    return os.path.join(registry.runtime_dir(), "holder.json")


def holder_socket() -> str:
    """The router's slirp4netns-style API socket (published ports of every member)."""
    return os.path.join(registry.runtime_dir(), "holder.sock")


def holder_control() -> str:
    """The router's own control socket (sync requests from `run --network` and `network`)."""
    return os.path.join(registry.runtime_dir(), "holder-ctl.sock")


SUN_PATH_MAX = 107          # bytes of a UNIX socket path (sockaddr_un.sun_path, NUL included)


def check_socket_paths() -> None:
    """Raise registry.RegistryError (one line) when the holder's sockets would not fit in a
    sockaddr_un: a deep $XDG_RUNTIME_DIR (the router could not bind them)."""
    for path in (holder_socket(), holder_control()):
        if len(os.fsencode(path)) > SUN_PATH_MAX:
            raise registry.RegistryError(
                f"{path}: {len(os.fsencode(path))} bytes, too long for a UNIX socket (at most "
                f"{SUN_PATH_MAX}): point XDG_RUNTIME_DIR at a shorter directory")


def holder_log() -> str:
    return os.path.join(registry.runtime_dir(), "holder.log")
