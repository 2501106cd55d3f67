"""Leave the process without the interpreter's teardown, once the work is done.

When `slirpy run`'s command has exited, or slirp4netns mode's exit fd said so, everything that
must happen has happened in order: the flows drained, a capture flushed and closed, the stats
file written, the API socket and a named run's records removed. What is left is the
interpreter's own teardown, which frees every module and object one by one: 20-30 ms here
(perf/NOTES.md, session 18), and the caller waits for it. Podman's `run --rm` returns only
once its network process has exited; a script's next line waits for `slirpy run`.
`os._exit` skips it; the standard streams are flushed first, as the teardown would.

Only the console scripts call this, at their very end: code that runs `slirpy run` or
slirp4netns mode inside another Python process (tests, click's runner) gets SystemExit as before.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False   # typing's, without importing typing (start-up: quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    from typing import NoReturn


def exit_now(code: str | int | None) -> NoReturn:
    """Exit with `code` as sys.exit would take it (None: 0; an int: that status), without the
    interpreter's teardown. Anything else (a message) goes to sys.exit as before."""
    if code is None:
        code = 0
    if not isinstance(code, int):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):      # a closed pipe, a closed stream: nothing to keep
            pass
    os._exit(code & 0xFF)
