"""The setup conversation between slirpy (P) and the child it forked (the supervisor S, or the
child of `attach_tap`), over an AF_UNIX SOCK_SEQPACKET socketpair.

The child sends short words (``unshared``), a JSON note with the TAP fd attached (SCM_RIGHTS),
or a JSON ``{"error": ...}`` line; P turns each failure (a child that died, an error note, no
fd) into one SandboxError line, and kills and reaps a child whose setup failed.  Every fd
received is close-on-exec.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct

from slirpy.sandbox.errors import SandboxError

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd (quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

SETUP_TIMEOUT = 60.0           # seconds P waits for each setup step of the child
MSG_MAX = 4096
_INT_SIZE = 4


def one_line(text: str) -> str:
    return " ".join(text.split())


# -- P's side ------------------------------------------------------------------------------------

def recv_msg(sock: socket.socket, pid: int, maxfds: int = 0) -> tuple[bytes, list[int]]:
    # Not socket.recv_fds: Python 3.11's ignores its flags argument, and the fd must be CLOEXEC.
    fds: list[int] = []
    try:
        msg, ancdata, _, _ = sock.recvmsg(MSG_MAX, socket.CMSG_SPACE(maxfds * _INT_SIZE) if maxfds else 0,
                                          socket.MSG_CMSG_CLOEXEC)
    except ConnectionResetError:
        msg, ancdata = b"", []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT_SIZE
            fds.extend(struct.unpack(f"={usable // _INT_SIZE}i", data[:usable]))
    if not msg:
        for fd in fds:
            os.close(fd)
        raise SandboxError(f"sandbox process ended during setup ({describe_end(pid)})")
    return msg, fds


def describe_end(pid: int) -> str:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def expect(sock: socket.socket, pid: int, word: str) -> None:
    msg, _ = recv_msg(sock, pid)
    if msg != word.encode():
        raise SandboxError(decode_error(msg))


def decode_error(msg: bytes) -> str:
    try:
        note = json.loads(msg)
        return one_line(str(note["error"]))
    except (ValueError, KeyError, TypeError):
        return f"sandbox setup failed: unexpected message {msg[:80]!r}"


def receive_tap(sock: socket.socket, pid: int) -> tuple[int, dict]:
    msg, fds = recv_msg(sock, pid, maxfds=1)
    try:
        note = json.loads(msg)
    except ValueError:
        note = {}
    if "error" in note or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise SandboxError(decode_error(msg) if "error" in note else "sandbox sent no TAP fd")
    return fds[0], note


def receive_note(sock: socket.socket, pid: int) -> dict:
    """The ready note of a sandbox without tap0 (SandboxError if it sent an error)."""
    msg, fds = recv_msg(sock, pid)
    for fd in fds:
        os.close(fd)
    try:
        note = json.loads(msg)
    except ValueError:
        note = None
    if not isinstance(note, dict) or "error" in note or not note.get("ready"):
        raise SandboxError(decode_error(msg))
    return note


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# -- the child's side ----------------------------------------------------------------------------

def send_error(sock: socket.socket, exc: BaseException) -> None:
    try:
        from slirpy import doctor    # here: its imports would cost every start-up
        sock.sendall(json.dumps({"error": doctor.explain(exc)}).encode())
    except OSError:
        pass


def send_tap(sock: socket.socket, note: dict[str, Any], tap_fd: int) -> None:
    socket.send_fds(sock, [json.dumps(note).encode()], [tap_fd])
