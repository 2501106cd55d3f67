"""`<runtime_dir>/holder.json`: which processes hold the networks right now.

Written by the router once it serves (atomically, by rename), removed by it when the last
member has gone. Pids alone are not trusted: each comes with its start time (as the registry's
records do), so a reused pid is never taken for the keeper or the router.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from slirpy import registry
from slirpy.networks import paths


@dataclass
class HolderState:
    keeper_pid: int
    keeper_start: int
    router_pid: int
    router_start: int
    started: float

    def keeper_alive(self) -> bool:
        return registry.proc_start_time(self.keeper_pid) == self.keeper_start

    def router_alive(self) -> bool:
        return registry.proc_start_time(self.router_pid) == self.router_start


def read_state() -> HolderState | None:
    try:
        with open(paths.holder_file(), encoding="utf-8") as f:
            return HolderState(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def write_state(state: HolderState) -> None:
    path = paths.holder_file()
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f)
    os.replace(tmp, path)


def remove_state(router_pid: int) -> None:
    """Remove holder.json and the router's sockets if they are still `router_pid`'s."""
    state = read_state()
    if state is None or state.router_pid != router_pid:
        return
    for path in (paths.holder_file(), paths.holder_socket(), paths.holder_control()):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
