"""`Sandbox`: what slirpy (P) holds of a sandbox, from the fork to the reaping.

`Sandbox.start` forks the supervisor, writes its id maps and receives tap0's fd; the handle then
lets the command run (`release`), passes signals on, and reaps the supervisor, whose exit status
is the command's.  The processes themselves are in `supervisor`.
"""

from __future__ import annotations

import os
import signal
import socket

from slirpy import netconf
from slirpy.sandbox.handoff import (SETUP_TIMEOUT, expect, kill_and_reap, receive_note, receive_tap,
                                   spin_until_readable)
from slirpy.sandbox.idmap import IdMaps, parent_maps, plan_id_maps
from slirpy.sandbox.libc import set_child_subreaper
from slirpy.sandbox.options import SandboxError, SandboxOptions
from slirpy.sandbox.supervisor import SUPERVISOR_MASK, TAP_NAME, exit_code, supervisor

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable


def _set_up(sock: socket.socket, pid: int, opts: SandboxOptions, maps: IdMaps,
            meanwhile: Callable[[], object] | None) -> tuple[int, dict, Callable[[], list[str]] | None]:
    """P's side of the setup conversation with S: (tap0's fd or -1, S's note, what finishes
    setting tap0's queue length: `release` calls it once the command may start)."""
    sock.settimeout(SETUP_TIMEOUT)
    if parent_maps(opts):             # else S maps itself (a single id) or joins a mapped namespace
        expect(sock, pid, "unshared")
        maps.apply(pid)
        sock.sendall(b"mapped")
    if meanwhile is not None:
        meanwhile()
        spin_until_readable(sock)     # S is about done: usually within 1-2 ms of the meanwhile
    if opts.net_mode == "private":
        tap_fd, note = receive_tap(sock, pid)
        queue = netconf.start_txqueuelen(TAP_NAME, netconf.TXQUEUELEN, in_namespaces_of=pid)
    else:
        tap_fd, note, queue = -1, receive_note(sock, pid), None
    sock.settimeout(None)
    return tap_fd, note, queue


class Sandbox:
    pid: int
    pidfd: int
    tap_fd: int
    vnet_hdr: bool
    offload: bool
    fallback_reason: str | None
    proc_warning: str | None

    def __init__(self, pid: int, pidfd: int, sock: socket.socket, tap_fd: int, note: dict) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self._sock: socket.socket | None = sock
        self.tap_fd = tap_fd
        self.vnet_hdr = bool(note.get("vnet_hdr"))
        self.offload = bool(note.get("offload"))
        self.fallback_reason = note.get("fallback_reason")
        self.proc_warning = note.get("proc_warning")
        self._status: int | None = None
        self._released = False
        self.init_pid: int | None = note.get("init_pid")
        self.keep_fd = -1         # modes without tap0: the write end of I's pipe (I lives while it is open)
        self._queue_done: Callable[[], list[str]] | None = None     # see _set_up

    @property
    def ns_pid(self) -> int:
        """A process inside the sandbox's namespaces for as long as it runs (I, else S)."""
        return self.init_pid or self.pid

    # -- start --------------------------------------------------------------------------------

    @classmethod
    def start(cls, opts: SandboxOptions, meanwhile: Callable[[], object] | None = None) -> "Sandbox":
        """Fork the sandbox; return once we hold its TAP fd (in modes without tap0: once it is
        set up; `tap_fd` is -1 then).  Call before any event loop exists.

        `meanwhile` runs here while the child creates and configures tap0 (start-up: `slirpy
        run` imports its event loop and runtime there, side by side with the child's pyroute2);
        if it raises, the child is killed and the exception propagates."""
        if not opts.argv:
            raise SandboxError("no command given")
        maps = plan_id_maps(opts.map_subuids)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep = None
        if opts.net_mode != "private":   # S hands the command and I over to us: see supervisor
            set_child_subreaper()
            keep = os.pipe2(os.O_CLOEXEC)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_MASK)
        parent_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            parent_sock.close()
            child_sock.close()
            for fd in keep or ():
                os.close(fd)
            raise SandboxError(f"cannot fork: {e.strerror}") from None
        if pid == 0:  # pragma: no cover - runs in the forked child, reported over the socket
            code = 1
            try:
                parent_sock.close()
                code = supervisor(child_sock, opts, parent_pid, maps, keep)
            except BaseException:
                pass
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child_sock.close()
        if keep is not None:
            os.close(keep[0])
        queue = None
        try:
            tap_fd, note, queue = _set_up(parent_sock, pid, opts, maps, meanwhile)
            pidfd = os.pidfd_open(pid)
        except BaseException as e:
            if queue is not None:
                queue()                        # reap `ip`; its warnings no longer matter
            parent_sock.close()
            if keep is not None:
                os.close(keep[1])
            kill_and_reap(pid)
            if isinstance(e, SandboxError):
                raise
            if isinstance(e, socket.timeout):
                raise SandboxError(f"sandbox setup timed out after {SETUP_TIMEOUT:.0f} s") from None
            if isinstance(e, OSError):
                from slirpy import doctor
                raise SandboxError(doctor.explain(e)) from None
            raise
        if tap_fd >= 0:
            os.set_blocking(tap_fd, False)
        sandbox = cls(pid, pidfd, parent_sock, tap_fd, note)
        sandbox._queue_done = queue
        if keep is not None:
            sandbox.keep_fd = keep[1]
        return sandbox

    # -- running ------------------------------------------------------------------------------

    def release(self) -> None:
        """Let the sandbox exec the command."""
        if self._released or self._sock is None:
            return
        self._released = True
        try:
            self._sock.sendall(b"release")
        except OSError:
            pass  # the child is gone; wait() reports how it ended
        self._finish_queue()

    def _finish_queue(self) -> None:
        """Wait for tap0's queue length to be set (started by _set_up; a few ms, usually over)."""
        done, self._queue_done = self._queue_done, None
        if done is not None:
            for warning in done():
                os.write(2, f"slirpy: warning: {warning}\n".encode())

    def command_pid(self) -> int | None:
        """Modes without tap0, after `release`: the command's pid, once S has forked it and is
        exiting (the command and I are then ours to wait for: `waiter`).  None if S failed."""
        if self._sock is None or self.keep_fd < 0:
            return None
        try:
            self._sock.settimeout(SETUP_TIMEOUT)
            msg = self._sock.recv(64)
        except OSError:
            return None
        word, _, pid = msg.decode(errors="replace").partition(" ")
        return int(pid) if word == "command" and pid.isdigit() else None

    def send_signal(self, sig: int) -> None:
        """Pass `sig` to the command (through the supervisor); no error if it is gone."""
        if self._status is not None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except (ProcessLookupError, OSError):
            pass

    def poll(self) -> int | None:
        """The exit code if the sandbox has ended (reaping it), else None."""
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            self._status = exit_code(status)
        return self._status

    def wait(self) -> int:
        """Reap the sandbox; the command's exit code, or 128+N when it was killed by signal N."""
        if self._status is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                raise SandboxError("sandbox process was already reaped by someone else") from None
            self._status = exit_code(status)
        return self._status

    def ended(self, code: int) -> None:
        """Someone else reaped the sandbox (`waiter`): its exit code, for `poll` and `__exit__`."""
        self._status = code

    def close(self) -> None:
        """Close every fd we hold (TAP, pidfd, control socket).  Does not wait for the child."""
        self._finish_queue()                   # never released: still reap `ip`
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for attr in ("tap_fd", "pidfd", "keep_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                setattr(self, attr, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is None:
            self.send_signal(signal.SIGKILL)
            self.wait()
        self.close()
