"""What the plumber does for the router (plumber.py): each `op_NAME` answers request NAME.

Why a module of its own: these are the only parts of the holder that read the registry and the
definitions, start the keeper and run code inside its namespaces (bridges, `nft`), and they
run in the unhardened plumber process only; the hardened router imports none of this.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict

from slirpy import registry
from slirpy.networks import defs as _defs
from slirpy.networks import holderns, members as _members, nft
from slirpy.networks.state import HolderState, read_state, remove_state, write_state
from slirpy.networks.withfds import WithFds


class Plumbing:
    def __init__(self, router_pid: int) -> None:
        self.router_pid = router_pid
        self.keeper_pid = 0
        self.keeper_start = 0
        self.member_pids: set[int] = set()
        self.applied_bridges: list[dict] | None = None   # what the holder has now (None: unknown)
        self.applied_script: str | None = None
        self.carried: dict[str, list[int]] = {}   # rule comment -> [packets, bytes] of replaced tables

    def op_start(self) -> dict:
        """A living keeper from holder.json, or a new one (forwarding on, lo up)."""
        state = read_state()
        if state is not None and state.keeper_alive():
            self.keeper_pid, self.keeper_start = state.keeper_pid, state.keeper_start
        else:
            self.keeper_pid = holderns.start_keeper(sys.stderr.fileno())
            self.keeper_start = registry.proc_start_time(self.keeper_pid) or 0
            holderns.in_holder(self.keeper_pid, holderns.init_holder)
        return {"keeper_pid": self.keeper_pid, "keeper_start": self.keeper_start}

    def op_ready(self) -> None:
        """The router serves: holder.json names it."""
        write_state(HolderState(self.keeper_pid, self.keeper_start, self.router_pid,
                                registry.proc_start_time(self.router_pid) or 0, time.time()))

    def op_plan(self) -> dict:
        """The live members (dead records dropped), bridges and nft applied."""
        members = _members.from_records(registry.live())
        all_defs = _defs.all_defs()
        act = _members.active(all_defs, members)
        bridges = _members.bridges(act)
        if bridges != self.applied_bridges:
            holderns.in_holder(self.keeper_pid, holderns.sync_bridges, bridges)
            self.applied_bridges = bridges
        script = nft.ruleset(act, _members.nft_members(members))
        if script != self.applied_script:       # most joins and leaves change no rule
            old = holderns.in_holder(self.keeper_pid, holderns.list_rules)
            holderns.in_holder(self.keeper_pid, holderns.apply_rules, script)
            self.applied_script = script
            self._carry(old)
        self.member_pids = {m.pid for m in members}
        views, domains = _members.name_views(members, all_defs)
        return {"members": [asdict(m) for m in members], "routed": _members.routed(act),
                "views": views, "domains": domains}

    def _carry(self, rules: list[dict]) -> None:
        """Keep the counts of a table about to be replaced."""
        for r in rules:
            if r.get("comment"):
                tot = self.carried.setdefault(r["comment"], [0, 0])
                tot[0] += r["packets"]
                tot[1] += r["bytes"]

    def op_rules(self) -> dict:
        """{"rules": the live table's rules, "counters": {comment: {packets, bytes}} since start}."""
        rules = holderns.in_holder(self.keeper_pid, holderns.list_rules)
        totals = {k: list(v) for k, v in self.carried.items()}
        for r in rules:
            if r.get("comment"):
                tot = totals.setdefault(r["comment"], [0, 0])
                tot[0] += r["packets"]
                tot[1] += r["bytes"]
        return {"rules": rules, "counters": {k: {"packets": p, "bytes": b} for k, (p, b) in totals.items()}}

    def op_proc_net(self, name: str) -> WithFds:
        """The open /proc/PID/net of the live member `name` that asked for `-p auto` (PID: a
        process inside it, its PID 1), for the router's scan of its socket tables."""
        m = next((m for m in _members.from_records(registry.live()) if m.name == name), None)
        if m is None or m.auto_publish is None or not m.ns_pid:
            raise ValueError(f"{name!r} is not a running member with -p auto")
        fd = os.open(f"/proc/{m.ns_pid}/net", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return WithFds({"name": name}, [fd])

    def op_release_if_idle(self) -> bool:
        """Under the state lock: if no member lives, remove the holder's files and end the
        keeper (a `run` that takes the lock after us starts a new holder)."""
        with registry.state_lock():
            if _members.from_records(registry.live()):
                return False
            remove_state(self.router_pid)
            try:
                os.kill(self.keeper_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return True

    def op_keeper_gone(self) -> None:
        """The router stops because the keeper died: nothing holds the networks any more."""
        if not holderns.alive(self.keeper_pid, self.keeper_start):
            with registry.state_lock():
                remove_state(self.router_pid)
