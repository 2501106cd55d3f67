"""C, the user's command: restore the signal state the supervisor changed, then exec it, searching
PATH as a shell does (and with a shell's 126/127 when it cannot).

Not os.execvp: a script without ``#!`` must run under /bin/sh as execvp(3) does, and the exit
status and the one-line reason must say which of "not found" and "cannot execute" happened.
"""

from __future__ import annotations

import errno
import os
import signal

# Sent to S with kill(2) are passed on to the command.
FORWARDED_SIGNALS = frozenset({
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT,
})


def exec_command(argv: list[str]) -> int:  # pragma: no cover
    """C: restore default signal state and exec.  Returns 127/126 only if exec failed."""
    for sig in FORWARDED_SIGNALS | {signal.SIGPIPE, signal.SIGXFSZ}:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    name = argv[0]
    reason, code = "command not found", 127
    if "/" in name:
        candidates = [name]
    else:
        path = os.environ.get("PATH") or os.defpath
        candidates = [os.path.join(d or ".", name) for d in path.split(os.pathsep)]
    # Search like a shell: skip what does not exist (or sits in a directory we cannot search);
    # a file that exists but cannot be executed is 126, nothing found at all is 127.
    for cand in candidates:
        try:
            try:
                os.execv(cand, argv)
            except OSError as e:
                if e.errno != errno.ENOEXEC:
                    raise
                os.execv("/bin/sh", ["/bin/sh", cand, *argv[1:]])   # a script without #!, as execvp(3)
        except OSError as e:
            if "/" in name:
                reason = e.strerror or str(e)
                code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
                break
            if e.errno in (errno.ENOENT, errno.ENOTDIR) or (e.errno == errno.EACCES and not os.path.isfile(cand)):
                continue
            reason, code = e.strerror or str(e), 126
            break
    os.write(2, f"slirpy: {name}: {reason}\n".encode(errors="replace"))
    return code
