"""The caller's side of the holder: find it or start it, and ask it to sync.

`ensure_holder()` (under the state lock) returns the running holder, starting the router
(which starts or reuses the keeper) when there is none: a detached process in its own
session, stdio to holder.log, that reports "ok" or its error on a pipe once it serves.
`request(op)` sends one JSON line to the router's control socket and returns its answer.
`holder_status()` is what `slirpy ps` asks: is the holder of the networks running?
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from slirpy import registry
from slirpy.networks import paths
from slirpy.networks.state import HolderState, read_state

START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0


class HolderError(Exception):
    """The holder could not be started or asked; str() is one line."""


def holder_status() -> str:
    """"running" (router and keeper alive), "down" (a keeper without its router: members keep
    talking to each other, not to the outside, until the next `run --network`), or "stopped"."""
    state = read_state()
    if state is None or not state.keeper_alive():
        return "stopped"
    return "running" if state.router_alive() else "down"


def ensure_holder() -> HolderState:
    """The running holder, started if needed. Call under registry.state_lock()."""
    state = read_state()
    if state is not None and state.router_alive() and state.keeper_alive():
        return state
    try:
        paths.check_socket_paths()
    except registry.RegistryError as e:
        raise HolderError(str(e)) from None
    return _start_router()


def _start_router() -> HolderState:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _spawn_detached(w)
    finally:
        os.close(w)
    try:
        import select
        ready, _, _ = select.select([r], [], [], START_TIMEOUT)
        word = os.read(r, 4096).decode(errors="replace") if ready else ""
    finally:
        os.close(r)
    if word != "ok":
        raise HolderError(word or f"the network holder did not start (see {paths.holder_log()})")
    state = read_state()
    if state is None or state.router_pid != pid:
        raise HolderError(f"the network holder started but wrote no state (see {paths.holder_log()})")
    return state


def _spawn_detached(ready_w: int) -> int:
    """Start the router as nobody's child (a double fork: it must not become a zombie of
    this member's process when killed, nor send it SIGCHLD), in its own session, stdio to
    holder.log. Its pid."""
    log = os.open(paths.holder_log(), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - the short-lived middle process
        code = 1
        try:
            proc = subprocess.Popen([sys.executable, "-m", "slirpy.networks.router", str(ready_w)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(ready_w,),
                                    start_new_session=True, close_fds=True)
            os.write(pid_w, str(proc.pid).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(log)
    os.close(pid_w)
    with os.fdopen(pid_r, "rb") as f:
        text = f.read().decode()
    os.waitpid(child, 0)
    if not text:
        raise HolderError("cannot start the network holder (fork failed)")
    return int(text)


def request(op: str, timeout: float = REQUEST_TIMEOUT) -> object:
    """One request to the router; its "ok" value. HolderError if it is not running or says no."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout)
            s.connect(paths.holder_control())
            s.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise HolderError(f"the network holder is not answering ({e.strerror or e})") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise HolderError("the network holder sent an unreadable reply") from None
    if "error" in reply:
        raise HolderError(f"the network holder: {reply['error']}")
    return reply.get("ok")
