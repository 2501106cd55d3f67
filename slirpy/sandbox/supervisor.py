"""S, the supervisor, and I, the PID 1 it forks: the two processes that hold the sandbox together
(see the package docstring for the whole picture).

S runs in the child P forked, with `SUPERVISOR_MASK` blocked: it enters its namespaces (those of
its network mode, see `modes`), makes its mounts private, starts I, creates and hands over tap0
(or, in the other modes, sets up what they need and reports ready), waits for ``release``, forks
the command (C) and then passes on the signals sent to it until C exits — or, in the modes
without tap0, tells P C's pid and exits, leaving C and I to P (see the package docstring).  Nothing here returns into the caller's code:
each function's result is a process's exit status.
"""

from __future__ import annotations

import json
import os
import signal
import socket

from slirpy import nativewaiter, netconf
from slirpy.config import NetConfig
from slirpy.sandbox.command import FORWARDED_SIGNALS, exec_command
from slirpy.sandbox.handoff import MSG_MAX, kill_and_reap, send_error, send_tap, spin_until_readable
from slirpy.sandbox.idmap import IdMaps, maps_itself, parent_maps
from slirpy.sandbox import modes
from slirpy.sandbox.libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, mount, set_pdeathsig
from slirpy.sandbox.options import SandboxError, SandboxOptions
from slirpy.tap import TapDevice

TAP_NAME = "tap0"
EXIT_NOT_RELEASED = 125        # S's status when P went away before release()
SUPERVISOR_MASK = FORWARDED_SIGNALS | {signal.SIGCHLD}


def exit_code(status: int) -> int:
    """A wait status in shell convention: the exit code, or 128+N when killed by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def supervisor(sock: socket.socket, opts: SandboxOptions, parent_pid: int, maps: IdMaps,
               keep: tuple[int, int] | None = None) -> int:  # pragma: no cover
    """S: runs in the forked child with SUPERVISOR_MASK blocked.  Returns the exit status.

    `keep`: in the modes without tap0, P's pipe for I (P holds the write end, so I lives as long
    as P does) and S hands the command over to P instead of waiting for it (P is a subreaper)."""
    if not _enter_namespaces(sock, opts, parent_pid, maps):
        return 1
    for problem in modes.prepare(opts):
        _warn(problem)
    pid1 = _start_init(sock, keep)
    if pid1 is None:
        return 1
    _warn(pid1.proc_warning)
    if opts.net_mode == "private":
        if not _hand_over_tap(sock, opts.net, pid1):
            return 1
    elif not _report_ready(sock, opts, pid1):
        return 1
    if not _released(sock):
        pid1.stop()
        return EXIT_NOT_RELEASED
    if keep is not None:
        return _hand_command_over(sock, opts.argv, pid1)
    return _run_command(sock, opts.argv, pid1)


def _warn(problem: str | None) -> None:
    if problem:
        os.write(2, f"slirpy: warning: {problem}\n".encode())


def _enter_namespaces(sock: socket.socket, opts: SandboxOptions, parent_pid: int,
                      maps: IdMaps) -> bool:  # pragma: no cover
    """Unshare (or join), write our id maps (or let P write them: idmap), make every mount
    private.  False if that failed."""
    try:
        modes.enter(opts)
        if maps_itself(opts):
            maps.apply_own()
        set_pdeathsig(signal.SIGKILL)      # after: a change of credentials clears it
    except (OSError, SandboxError) as e:
        send_error(sock, e)
        return False
    if os.getppid() != parent_pid:
        return False
    if parent_maps(opts):
        sock.sendall(b"unshared")
        if sock.recv(MSG_MAX) != b"mapped":
            return False
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as e:
        send_error(sock, SandboxError(f"cannot make mounts private in the sandbox: {e.strerror}"))
        return False
    return True


class _Init:
    """S's hold on I: I runs until `keep_w`, the only writer of the pipe it reads, is closed.
    (A plain class: a dataclass's methods are generated when the module is imported, which P
    does on `slirpy run`'s way to its command's start; S alone uses this.)"""
    __slots__ = ("pid", "keep_w", "proc_warning")

    def __init__(self, pid: int, keep_w: int, proc_warning: str | None) -> None:
        self.pid = pid
        self.keep_w = keep_w
        self.proc_warning = proc_warning

    def stop(self) -> None:
        os.close(self.keep_w)
        kill_and_reap(self.pid)


def _start_init(sock: socket.socket, keep: tuple[int, int] | None) -> _Init | None:  # pragma: no cover
    """Fork I, PID 1 of the new PID namespace, and wait for its report.  None if the fork failed.
    With P's `keep` pipe, I outlives S (no pdeathsig: S exits once the command runs)."""
    keep_r, keep_w = keep if keep is not None else os.pipe2(os.O_CLOEXEC)
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    try:
        init_pid = os.fork()
    except OSError as e:
        send_error(sock, SandboxError(f"cannot start the sandbox's init process: {e.strerror}"))
        return None
    if init_pid == 0:
        code = 0
        try:
            sock.close()
            os.close(keep_w)
            os.close(rep_r)
            init(keep_r, rep_w, pdeathsig=keep is None)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(keep_r)
    os.close(rep_w)
    with os.fdopen(rep_r, "rb") as rep:
        proc_warning = rep.read().decode(errors="replace") or None
    return _Init(init_pid, keep_w, proc_warning)


def _hand_over_tap(sock: socket.socket, net: NetConfig, pid1: _Init) -> bool:  # pragma: no cover
    """Create and configure tap0, send its fd and the note to P.  False (P told, I ended) if not."""
    def fail(exc: BaseException) -> bool:
        send_error(sock, exc)
        pid1.stop()
        return False

    try:
        tap = TapDevice.create(TAP_NAME, offload=net.offload)
    except OSError as e:
        return fail(e)
    try:
        # txqueuelen: by P (sandbox/handle.py), or `ip` would take the command's pid 2
        for warning in netconf.configure(tap.name, net, txqueuelen=None, hide_ipv6=True):
            _warn(warning)
        note = {"vnet_hdr": tap.vnet_hdr, "offload": tap.offload,
                "fallback_reason": tap.fallback_reason, "proc_warning": pid1.proc_warning}
        send_tap(sock, note, tap.fd)
    except (OSError, netconf.NetconfError) as e:
        return fail(e)
    finally:
        tap.close()
    return True


def _report_ready(sock: socket.socket, opts: SandboxOptions, pid1: _Init) -> bool:  # pragma: no cover
    """A mode without tap0: run `member_setup` if any, then tell P we are ready.  False (P told,
    I ended) if the set-up failed.

    Only now, with I running: S's first fork after unshare(CLONE_NEWPID) becomes the new
    namespace's PID 1, so a set-up that ran a program before I would end the namespace with
    it.  The price: I has mounted the new namespace's /proc, where S has no pid, so S's
    /proc/self does not work here (fork a child, which is in the namespace, for what needs it)."""
    if opts.member_setup is not None:
        try:
            for warning in opts.member_setup():
                _warn(warning)
        except Exception as e:       # whatever nw15's plumbing raised: one line to P
            send_error(sock, e)
            pid1.stop()
            return False
    try:
        sock.sendall(json.dumps({"ready": True, "proc_warning": pid1.proc_warning,
                                 "init_pid": pid1.pid}).encode())
    except OSError:
        pid1.stop()
        return False
    return True


def _released(sock: socket.socket) -> bool:  # pragma: no cover
    """Wait for P's ``release``; False if P went away (or said anything else)."""
    spin_until_readable(sock)     # in early release, P releases within a millisecond or so
    try:
        return sock.recv(MSG_MAX) == b"release"
    except OSError:
        return False


def _run_command(sock: socket.socket, argv: list[str], pid1: _Init) -> int:  # pragma: no cover
    """Fork C, pass signals on until it exits, then end I.  C's status in shell convention."""
    cmd_pid = _fork_command(sock, argv, pid1)
    sock.close()
    status, init_alive = supervise(cmd_pid, pid1.pid)
    os.close(pid1.keep_w)
    if init_alive:
        kill_and_reap(pid1.pid)   # PID 1 gone: the kernel kills the rest of the namespace
    return status


def _fork_command(sock: socket.socket, argv: list[str], pid1: _Init) -> int:  # pragma: no cover
    """Fork C, which execs the command (127 if it cannot); C's pid. Raises OSError (fork)."""
    cmd_pid = os.fork()
    if cmd_pid == 0:
        code = 127
        try:
            sock.close()
            os.close(pid1.keep_w)
            code = exec_command(argv)
        finally:
            os._exit(code)
    return cmd_pid


def _hand_command_over(sock: socket.socket, argv: list[str], pid1: _Init) -> int:  # pragma: no cover
    """Fork C, tell P its pid and exit: C and I become P's children (P is a subreaper), and P
    waits for C.  1 if the fork failed (P then reports S's status)."""
    try:
        cmd_pid = _fork_command(sock, argv, pid1)
    except OSError as e:
        send_error(sock, SandboxError(f"cannot start the command: {e.strerror}"))
        return 1
    try:
        sock.sendall(f"command {cmd_pid}".encode())
    except OSError:
        pass                      # P is gone: pdeathsig ends us, P's pipe ends I
    return 0


# PID 1 needs no Python once /proc is mounted: it execs the native waiter's `hold` mode or else
# `cat` (reading the keep pipe on stdin, ignored SIGCHLD inherited), and exits at EOF, when every
# holder of the pipe's write end is gone.
CAT_PATHS = ("/usr/bin/cat", "/bin/cat")


def init(keep_r: int, rep_w: int, pdeathsig: bool = True) -> None:  # pragma: no cover
    """I: PID 1.  Mount /proc, report, then block until S (or P) goes away; orphans are auto-reaped."""
    if pdeathsig:
        set_pdeathsig(signal.SIGKILL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)   # PID 1 ignores SIG_DFL signals from its namespace
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        warning = ""
    except OSError as e:
        warning = (f"cannot mount a fresh /proc for the sandbox's PID namespace ({e.strerror}); "
                   "/proc inside shows the outer PID namespace")
    os.write(rep_w, warning.encode())
    os.close(rep_w)
    _exec_cat(keep_r)
    while os.read(keep_r, 1):
        pass


def _exec_cat(keep_r: int) -> None:  # pragma: no cover
    """Become `slirpy-waiter hold` (nativewaiter) or else `cat`, with the keep pipe on stdin and
    /dev/null for stdout and stderr; returns only if that failed (then I stays this interpreter)."""
    try:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    os.dup2(keep_r, 0)
    os.dup2(null, 1)
    os.dup2(null, 2)
    native = nativewaiter.to_use()
    candidates = [(native, [nativewaiter.BINARY_NAME, "hold"])] if native else []
    for path, argv in candidates + [(cat, ["cat"]) for cat in CAT_PATHS]:
        try:
            os.execv(path, argv)
        except OSError:
            pass


def supervise(cmd_pid: int, init_pid: int) -> tuple[int, bool]:  # pragma: no cover
    """S: forward signals sent to us to the command; once it exits return (its status, init alive)."""
    init_alive = True
    while True:
        info = signal.sigwaitinfo(SUPERVISOR_MASK)
        if info.si_signo == signal.SIGCHLD:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return 1, False
                if pid == 0:
                    break
                if pid == cmd_pid:
                    return exit_code(status), init_alive
                if pid == init_pid:
                    init_alive = False  # the namespace is gone; the command dies with it
        elif info.si_code <= 0:   # SI_USER, SI_QUEUE, SI_TKILL: sent to us, not by the terminal
            try:
                os.kill(cmd_pid, info.si_signo)
            except ProcessLookupError:
                pass
