"""The ROUTER: the slirpy runtime that serves the holder's tap0 and routes every network.

Started detached (`python -m slirpy.networks.router`, its own session, output to holder.log)
by the first `slirpy run --network` that finds no router. It reuses a living keeper (a router
killed with SIGKILL leaves one) or starts one, creates tap0 in the keeper's namespaces
exactly as slirp4netns mode does (sandbox.attach), and serves it with the ordinary Runtime:
the members' packets reach it with their own source addresses, routed by the holder kernel.
`allow_host_loopback` is on here; nft decides which member may use it.

Its state work (reading the registry under the lock, bridges, nft, in child processes inside
the keeper's namespaces) runs in one worker thread, one job at a time, so the event loop keeps
serving meanwhile; the results (routes, names, ports) are applied on the loop. A `sync`
request on the control socket (`holder-ctl.sock`, one JSON line each way) runs one such job;
so does the exit of a member (a pidfd per member). With no member left for `IDLE_GRACE`
seconds, it removes its files, ends the keeper and exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from slirpy import registry
from slirpy.networks import defs as _defs
from slirpy.networks import holderns, members as _members, nft, paths
from slirpy.networks.state import HolderState, read_state, remove_state, write_state

IDLE_GRACE = 2.0
log = logging.getLogger("slirpy.router")


class Router:
    def __init__(self, runtime: Any, keeper_pid: int, target: Any) -> None:
        self.runtime = runtime
        self.keeper_pid = keeper_pid
        self.target = target                     # slirp4netns.AttachedTarget: send_signal stops us
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="holder-state")
        self.members: list[_members.Member] = []
        self.watched: dict[int, int] = {}        # member pid -> pidfd
        self.forwards: dict[str, list[int]] = {}  # member name -> forward ids we made
        self.idle_handle: asyncio.TimerHandle | None = None
        self.stopping = False
        self.lock = asyncio.Lock()
        self.control: asyncio.AbstractServer | None = None
        self.applied_bridges: list[dict] | None = None   # what the holder has now (None: unknown)
        self.applied_script: str | None = None
        self.carried: dict[str, list[int]] = {}   # rule comment -> [packets, bytes] of replaced tables

    # -- control socket --------------------------------------------------------------------

    async def serve_control(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        # kept: uvloop closes a server whose object is garbage-collected
        self.control = await asyncio.start_unix_server(self._client, path=path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            req = json.loads(line or b"{}")
            op = req.get("op")
            if op == "sync":
                reply: dict = await self.sync()
            elif op == "rules":
                reply = {"ok": await self._in_worker(self.counters)}
            elif op == "ping":
                reply = {"ok": {"pid": os.getpid(), "keeper": self.keeper_pid}}
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception as e:             # noqa: BLE001 - reported to the client, one line
            reply = {"error": " ".join(str(e).split()) or type(e).__name__}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()
        except OSError:
            pass

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    # -- sync ------------------------------------------------------------------------------

    def _plan(self) -> dict:
        """Worker thread: the live members (dead records dropped), bridges and nft applied."""
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
        views, domains = _members.name_views(members, all_defs)
        return {"members": members, "routed": _members.routed(act), "views": views, "domains": domains}

    def _carry(self, rules: list[dict]) -> None:
        """Keep the counts of a table about to be replaced (worker thread)."""
        for r in rules:
            if r.get("comment"):
                tot = self.carried.setdefault(r["comment"], [0, 0])
                tot[0] += r["packets"]
                tot[1] += r["bytes"]

    def counters(self) -> dict:
        """{"rules": the live table's rules, "counters": {comment: {packets, bytes}} since start}."""
        rules = holderns.in_holder(self.keeper_pid, holderns.list_rules)
        totals = {k: list(v) for k, v in self.carried.items()}
        for r in rules:
            if r.get("comment"):
                tot = totals.setdefault(r["comment"], [0, 0])
                tot[0] += r["packets"]
                tot[1] += r["bytes"]
        return {"rules": rules, "counters": {k: {"packets": p, "bytes": b} for k, (p, b) in totals.items()}}

    async def sync(self) -> dict:
        """Bring everything in line with the registry; {"ok": {...}} with per-member port errors."""
        async with self.lock:
            plan = await self._in_worker(self._plan)
            self.members = plan["members"]
            stack = self.runtime.stack
            if hasattr(stack, "set_routed"):
                stack.set_routed(plan["routed"])
            if hasattr(stack, "set_names"):
                stack.set_names(plan["views"], plan["domains"])
            errors = await self._sync_ports()
            self._watch()
            self._idle_check()
            return {"ok": {"members": [m.name for m in self.members], "port_errors": errors}}

    async def _sync_ports(self) -> dict[str, str]:
        from slirpy.config import parse_port_spec
        ports = self.runtime.ports
        live = {m.name: m for m in self.members}
        for name in [n for n in self.forwards if n not in live]:
            for fid in self.forwards.pop(name):
                ports.remove_forward(fid)
        for fid, spec in ports.list_forwards():     # `port add` by others, to a gone member
            if spec.guest_addr and not _members.is_member_addr(spec.guest_addr, self.members):
                ports.remove_forward(fid)
        errors = {}
        for m in self.members:
            if m.name in self.forwards or not m.ports:
                continue
            made: list[int] = []
            self.forwards[m.name] = made
            for text, guest in _members.port_specs(m):
                try:
                    for spec in parse_port_spec(text):
                        spec = type(spec)(spec.proto, spec.host_addr, spec.host_port, spec.guest_port, guest)
                        made.append(await ports.add_forward(spec))
                except Exception as e:          # noqa: BLE001 - ConfigError, PortError, OSError
                    errors[m.name] = f"-p {text}: {e}"
                    break
        return errors

    # -- members' lives ----------------------------------------------------------------------

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        pids = {m.pid for m in self.members}
        for pid in [p for p in self.watched if p not in pids]:
            loop.remove_reader(self.watched[pid])
            os.close(self.watched.pop(pid))
        for pid in pids - set(self.watched):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue                            # already gone: the next sync drops it
            self.watched[pid] = fd
            loop.add_reader(fd, self._member_exited, pid)

    def _member_exited(self, pid: int) -> None:
        fd = self.watched.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        asyncio.get_running_loop().create_task(self.sync())

    def _idle_check(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if not self.members and not self.stopping:
            loop = asyncio.get_running_loop()
            self.idle_handle = loop.call_later(IDLE_GRACE, lambda: loop.create_task(self._maybe_stop()))

    async def _maybe_stop(self) -> None:
        async with self.lock:
            stop = await self._in_worker(self._release_if_idle)
            if not stop:                            # a member came meanwhile: sync once we are done
                asyncio.get_running_loop().create_task(self.sync())
                return
            self.stopping = True
            api = getattr(self.runtime, "api", None)
            if api is not None:
                api.path = ""                       # its file is gone already; never unlink a successor's
            self.target.send_signal(signal.SIGTERM)

    def _release_if_idle(self) -> bool:
        """Worker thread, under the state lock: if no member lives, remove our files and end
        the keeper (a `run` that takes the lock after us starts a new holder)."""
        with registry.state_lock():
            if _members.from_records(registry.live()):
                return False
            remove_state(os.getpid())
            try:
                os.kill(self.keeper_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return True


# ------------------------------------------------------------------ start-up


def _keeper() -> tuple[int, int]:
    """(pid, start time) of a living keeper from holder.json, or a new one."""
    state = read_state()
    if state is not None and state.keeper_alive():
        return state.keeper_pid, state.keeper_start
    log_fd = sys.stderr.fileno()
    pid = holderns.start_keeper(log_fd)
    start = registry.proc_start_time(pid) or 0
    holderns.in_holder(pid, holderns.init_holder)
    return pid, start


def _config() -> Any:
    from slirpy.config import build_net_config
    return build_net_config(allow_host_loopback=True, ipv6=True)


def main(argv: list[str]) -> int:
    """`python -m slirpy.networks.router [READY_FD]`: write "ok" (or an error line) to READY_FD."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s router: %(message)s")
    ready_fd = int(argv[0]) if argv else -1

    def ready(text: str) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            os.write(ready_fd, text.encode())
            os.close(ready_fd)
            ready_fd = -1

    try:
        keeper_pid, keeper_start = _keeper()
        from slirpy.sandbox import AttachOptions, attach_tap
        config = _config()
        tap = attach_tap(AttachOptions(tap_name="tap0", net=config, configure=True, pid=keeper_pid))
        keeper_pidfd = os.pidfd_open(keeper_pid)
    except Exception as e:                  # noqa: BLE001
        ready(f"cannot start the network holder: {' '.join(str(e).split())}")
        return 1
    import uvloop

    from slirpy.runtime import Runtime
    from slirpy.serve import serve_sandbox
    from slirpy.slirp4netns import AttachedTarget

    runtime = Runtime(config, tap.fd, vnet_hdr=tap.vnet_hdr, offload=tap.offload)
    runtime.linger = 0.0
    runtime.prepare_ports((), api_socket=paths.holder_socket())
    target = AttachedTarget(keeper_pidfd, -1, -1)
    router = Router(runtime, keeper_pid, target)

    async def setup() -> None:
        await router.serve_control(paths.holder_control())
        write_state(HolderState(keeper_pid, keeper_start, os.getpid(),
                                registry.proc_start_time(os.getpid()) or 0, time.time()))
        router._idle_check()
        ready("ok")

    try:
        return uvloop.run(serve_sandbox(runtime, target, setup))
    finally:
        if not router.stopping and not holderns.alive(keeper_pid, keeper_start):
            with registry.state_lock():         # the keeper died under us: nothing holds the networks
                remove_state(os.getpid())
        router.worker.shutdown(wait=False)
        target.close()
        os.close(tap.fd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
