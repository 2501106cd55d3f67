"""The PLUMBER: the router's unhardened helper, which does the networks' plumbing for it.

Why it exists: the router parses frames from every member, so it runs hardened like `slirpy
run` (harden.py: an emptied mount view, no capabilities but CAP_NET_BIND_SERVICE, no_new_privs,
the seccomp allow-list). The plumbing needs what that forbids: the registry and the network
definitions on disk (flock, files outside the kept root), starting the keeper, forks that
setns() into the keeper's namespaces for bridges and the real `nft -f -`. So before hardening
the router forks this small process (no event loop; the plumbing modules are imported in it
alone) and asks it over a socketpair: one JSON line each way, one request at a time, a request
at most MAX_REQUEST bytes and an answer at most MAX_ANSWER. It keeps what the plumbing
remembers (bridges and ruleset applied, counters of replaced tables) and watches the members'
pidfds: when one exits it writes one byte on the events pipe and the router syncs. The router
sees that pipe's end-of-file when the plumber dies (and stops: see router.py). The plumber
dies with the router (PR_SET_PDEATHSIG) and ends on the socket's end-of-file.

Requests ({"op": ...}) and answers ({"ok": value} or {"error": "one line"}):
`start` (the living keeper of holder.json, else a new one, forwarding on) -> {"keeper_pid",
"keeper_start"}; `ready` writes holder.json; `plan` (live members, bridges and nft applied) ->
{"members", "routed", "views", "domains"}; `rules` -> the table's rules and counters since
start; `release_if_idle` -> whether it removed the holder's files and ended the keeper (no
member left); `keeper_gone` removes the holder's files if the keeper died; `proc_net` (name) -> the open
/proc/PID/net of that live member with `-p auto` (a process inside it), as a file descriptor
(SCM_RIGHTS): the hardened router reads the member's socket tables through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
from typing import Any

from slirpy.networks.withfds import MAX_FDS, WithFds

MAX_REQUEST = 64 << 10
MAX_ANSWER = 4 << 20


class PlumberError(Exception):
    """The plumber refused a request, or is gone; str() is one line."""


# ------------------------------------------------------------------ the router's side


class Plumber:
    """The router's handle on its plumber: `call` inside the loop, `call_blocking` outside."""

    def __init__(self, pid: int, sock: socket.socket, events_fd: int) -> None:
        self.pid = pid
        self.sock = sock
        self.events_fd = events_fd           # readable: a member exited; end-of-file: plumber gone
        self.lock = asyncio.Lock()

    @classmethod
    def fork(cls, close: tuple[int, ...] = ()) -> Plumber:
        """Start the plumber (call before the event loop and before hardening); `close`: fds
        of the router's that the plumber must not keep open (the ready pipe)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        events_r, events_w = os.pipe2(os.O_CLOEXEC)
        router_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the plumber
            code = 0
            try:
                from slirpy.sandbox.libc import set_pdeathsig
                set_pdeathsig(signal.SIGKILL)
                if os.getppid() != router_pid:      # the router died before the line above
                    os._exit(0)
                ours.close()
                for fd in (events_r, *close):
                    os.close(fd)
                serve(theirs, events_w, router_pid)
            except BaseException as e:               # noqa: BLE001 - the router sees the pipe close
                os.write(2, f"plumber: {type(e).__name__}: {' '.join(str(e).split())}\n".encode()[:1000])
                code = 1
            os._exit(code)
        theirs.close()
        os.close(events_w)
        os.set_blocking(events_r, False)
        return cls(pid, ours, events_r)

    async def call(self, op: str) -> Any:
        loop = asyncio.get_running_loop()
        async with self.lock:
            self.sock.setblocking(False)
            try:
                await loop.sock_sendall(self.sock, json.dumps({"op": op}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = await loop.sock_recv(self.sock, 65536)
                    data = self._more(data, chunk)
            except OSError as e:
                raise PlumberError(f"the plumber is gone ({e.strerror or e})") from None
        return _unwrap(data)

    async def call_fds(self, op: str, **args: Any) -> tuple[Any, list[int]]:
        """`call` with arguments, for an answer that carries file descriptors (SCM_RIGHTS, at
        most MAX_FDS): (value, fds), the fds ours to close. The plumber never sends one unasked."""
        loop = asyncio.get_running_loop()
        fds: list[int] = []
        async with self.lock:
            self.sock.setblocking(False)
            try:
                await loop.sock_sendall(self.sock, json.dumps({"op": op, "args": args}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    await _readable(loop, self.sock)
                    try:
                        chunk, got, _, _ = socket.recv_fds(self.sock, 65536, MAX_FDS)
                    except BlockingIOError:
                        continue
                    fds += got
                    data = self._more(data, chunk)
            except (OSError, PlumberError) as e:
                for fd in fds:
                    os.close(fd)
                if isinstance(e, PlumberError):
                    raise
                raise PlumberError(f"the plumber is gone ({e.strerror or e})") from None
        try:
            return _unwrap(data), fds
        except PlumberError:
            for fd in fds:
                os.close(fd)
            raise

    def call_blocking(self, op: str) -> Any:
        """`call` without a loop (before it starts, after it ended)."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                data = self._more(data, self.sock.recv(65536))
        except OSError as e:
            raise PlumberError(f"the plumber is gone ({e.strerror or e})") from None
        return _unwrap(data)

    @staticmethod
    def _more(data: bytes, chunk: bytes) -> bytes:
        if not chunk:
            raise PlumberError("the plumber is gone")
        data += chunk
        if len(data) > MAX_ANSWER:
            raise PlumberError("the plumber's answer is too long")
        return data


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)
    loop.add_reader(sock.fileno(), wake)
    try:
        await done
    finally:
        loop.remove_reader(sock.fileno())


def _unwrap(data: bytes) -> Any:
    try:
        reply = json.loads(data)
    except ValueError:
        raise PlumberError("the plumber sent an unreadable answer") from None
    if not isinstance(reply, dict):
        raise PlumberError("the plumber sent an unreadable answer")
    if "error" in reply:
        raise PlumberError(str(reply["error"]))
    return reply.get("ok")


# ------------------------------------------------------------------ the plumber's side


def serve(sock: socket.socket, events_w: int, router_pid: int, work: Any = None) -> None:
    """The plumber's loop: answer requests, report members' exits, until the socket closes.
    `work` answers the ops (a Plumbing for the router; tests pass their own)."""
    if work is None:
        from slirpy.networks.plumbing import Plumbing
        work = Plumbing(router_pid)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    watched: dict[int, int] = {}             # pidfd -> member pid
    buf = b""
    while True:
        # Members' pidfds first, the socket last: answering a request re-watches (_rewatch
        # closes the pidfds of members gone from the registry, and a new pidfd may take a
        # closed one's number), so an event of this round for such a pidfd would be stale.
        for fd, _ in sorted(poller.poll(), key=lambda event: event[0] == sock.fileno()):
            if fd != sock.fileno():          # a member exited: the router syncs
                if watched.pop(fd, None) is None:
                    continue
                poller.unregister(fd)
                os.close(fd)
                os.write(events_w, b"m")
                continue
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
            if len(buf) > MAX_REQUEST and b"\n" not in buf:
                return                       # not our router talking
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                data, fds = _answer(work, line)
                try:
                    if fds:
                        sent = socket.send_fds(sock, [data], fds)
                        sock.sendall(data[sent:])
                    else:
                        sock.sendall(data)
                finally:
                    for fd in fds:
                        os.close(fd)
                _rewatch(poller, watched, work.member_pids)


def _answer(work: Any, line: bytes) -> tuple[bytes, list[int]]:
    """The answer line to one request, and the fds it carries (see WithFds)."""
    fds: list[int] = []
    try:
        req = json.loads(line)
        op = req.get("op") if isinstance(req, dict) else None
        args = req.get("args", {}) if isinstance(req, dict) else {}
        fn = getattr(work, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
        if fn is None or not isinstance(args, dict):
            out = {"error": f"unknown op {op!r}"}
        else:
            value = fn(**args)
            if isinstance(value, WithFds):
                value, fds = value.value, value.fds
            out = {"ok": value}
    except Exception as e:                   # noqa: BLE001 - sent back, one line
        out = {"error": " ".join(str(e).split()) or type(e).__name__}
    data = json.dumps(out).encode()
    if len(data) >= MAX_ANSWER:
        for fd in fds:
            os.close(fd)
        fds = []
        data = json.dumps({"error": "answer too long"}).encode()
    return data + b"\n", fds


def _rewatch(poller: Any, watched: dict[int, int], pids: set[int]) -> None:
    """Watch exactly the pidfds of `pids` (a member that exited is watched again while its
    record lives: the router syncs until the registry drops it)."""
    for fd, pid in list(watched.items()):
        if pid not in pids:
            poller.unregister(fd)
            os.close(fd)
            del watched[fd]
    for pid in pids - set(watched.values()):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue                        # already gone: the next sync drops it
        watched[fd] = pid
        poller.register(fd, select.POLLIN)
