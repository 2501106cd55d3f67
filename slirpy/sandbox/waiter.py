"""What a light `slirpy run` (every network mode but private) becomes once its command runs.

By then the supervisor has exited, so the command and the sandbox's PID 1 are children of this
process (a child subreaper); all that is left is to pass on the signals sent to it, wait, end
PID 1, unregister and exit with the command's code.  slirpy's parent exec()s this file on a bare
interpreter (``python -I -S waiter.py ...``) to drop the memory of everything it imported,
when the native waiter (waiter.c, the same job in C: `slirpy.nativewaiter`) is not built or
SLIRPY_PURE=1: an idle member of a network then costs this and PID 1's ``cat``, nothing more.
So it imports only os, signal and sys while it waits (the registry only at the end), and
nothing of slirpy's at all when run as a script; `wait_command` is also called in-process if that exec fails.

argv: SUPERVISOR_PID COMMAND_PID INIT_PID KEEP_FD NAME|- PACKAGE_PARENT_DIR
"""

from __future__ import annotations

import os
import signal
import sys

# The same set as command.FORWARDED_SIGNALS (a unit test checks): not imported, to stay bare.
FORWARDED = frozenset({
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
})
MASK = FORWARDED | {signal.SIGCHLD}


def _code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def wait_command(sup: int, cmd: int, init: int, keep_fd: int) -> int:
    """With MASK blocked: reap the supervisor, then pass on each signal sent to us (kill(2):
    si_code <= 0; the terminal's reached the command's process group already) until the command
    exits; then close PID 1's pipe and reap it.  The command's code (128+N if killed by N)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, MASK)
    try:
        os.waitpid(sup, 0)       # it exits right after forking the command, then the command is ours
    except ChildProcessError:
        pass
    code, init_alive = _wait_for(cmd, init)
    os.close(keep_fd)            # PID 1 (cat) reads EOF and exits: the kernel ends its namespace
    if init_alive:
        try:
            os.kill(init, signal.SIGKILL)
            os.waitpid(init, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return code


def _wait_for(cmd: int, init: int) -> tuple[int, bool]:
    init_alive = True
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 1, False          # the command is not ours: cannot happen after the handover
            if pid == 0:
                break
            if pid == cmd:
                return _code(status), init_alive
            if pid == init:
                init_alive = False       # the namespace is gone; the command dies with it
        info = signal.sigwaitinfo(MASK)
        if info.si_signo != signal.SIGCHLD and info.si_code <= 0:
            try:
                os.kill(cmd, info.si_signo)   # not reaped yet: the pid is still the command's
            except ProcessLookupError:
                pass


def unregister(name: str, root: str) -> None:
    """Remove our record (`slirpy.registry.unregister`); at the end, so its imports cost nothing
    while we wait."""
    if name == "-":
        return
    sys.path.insert(0, root)
    try:
        from slirpy import registry
        registry.unregister(name, os.getpid())
    except Exception:        # noqa: BLE001 - the next `slirpy ps` drops a dead run's record anyway
        pass


def main(argv: list[str]) -> int:
    sup, cmd, init, keep_fd = (int(a) for a in argv[:4])
    code = wait_command(sup, cmd, init, keep_fd)
    unregister(argv[4], argv[5])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
