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
import select
import signal
import socket
import struct
import time

from slirpy.sandbox.errors import SandboxError

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd (quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

SETUP_TIMEOUT = 60.0           # seconds P waits for each setup step of the child
MSG_MAX = 4096
_INT_SIZE = 4
# How long a setup step's reader polls before it sleeps (spin_until_readable).
SPIN_SECONDS = 0.003


def one_line(text: str) -> str:
    return " ".join(text.split())


def several_cpus() -> bool:
    """Whether this process may run on more than one CPU: polling for another process's
    message (here, and busypoll.py's loop) only makes sense then."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except OSError:
        return False


_MAY_SPIN = several_cpus()


def spin_until_readable(sock: socket.socket, seconds: float = SPIN_SECONDS) -> None:
    """Poll `sock` without sleeping, for at most `seconds`, before the caller's blocking read.

    Start-up, for a setup step whose message is due within a millisecond or two (the other
    process is at work on the other CPU): a reader that sleeps must be woken, and on a VM whose
    vCPU went idle that wake-up took from 0.05 ms to several (perf/NOTES.md, session 14); one
    that polls sees the message at once.  Only where the wait is short: a polling process keeps
    its CPU from taking on another task (a child just forked waits for the idle vCPU instead).
    Nothing with a single usable CPU, where the poll would hold up the process it waits for."""
    if not _MAY_SPIN:
        return
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    end = time.monotonic() + seconds
    while not poller.poll(0) and time.monotonic() < end:
        pass


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
