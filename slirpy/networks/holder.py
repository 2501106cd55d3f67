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
    return _start_router()


def _start_router() -> HolderState:
    r, w = os.pipe2(os.O_CLOEXEC)
    log = os.open(paths.holder_log(), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "slirpy.networks.router", str(w)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w,),
                                start_new_session=True, close_fds=True)
    finally:
        os.close(w)
        os.close(log)
    try:
        import select
        ready, _, _ = select.select([r], [], [], START_TIMEOUT)
        word = os.read(r, 4096).decode(errors="replace") if ready else ""
    finally:
        os.close(r)
    if word != "ok":
        if proc.poll() is None and not word:
            proc.kill()
        raise HolderError(word or f"the network holder did not start (see {paths.holder_log()})")
    state = read_state()
    if state is None or state.router_pid != proc.pid:
        raise HolderError(f"the network holder started but wrote no state (see {paths.holder_log()})")
    return state


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
