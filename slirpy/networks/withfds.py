"""An answer of the plumber's that carries open file descriptors (plumber.py sends them with
its line, SCM_RIGHTS, then closes its copies). A module of its own because both ends use it:
plumbing.py makes them, plumber.py sends and receives them."""

from __future__ import annotations

from typing import Any

MAX_FDS = 8         # at most this many fds with one answer


class WithFds:
    def __init__(self, value: Any, fds: list[int]) -> None:
        self.value = value
        self.fds = fds[:MAX_FDS]
