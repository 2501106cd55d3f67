"""The ROUTER: the slirpy runtime that serves the holder's tap0 and routes every network.

Started detached (`python -m slirpy.networks.router`, its own session, output to holder.log)
by the first `slirpy run --network` that finds no router. It creates tap0 in the keeper's
namespaces exactly as slirp4netns mode does (sandbox.attach), and serves it with the ordinary
Runtime: the members' packets reach it with their own source addresses, routed by the holder
kernel. `allow_host_loopback` is on here; nft decides which member may use it.

It parses every member's frames, so it hardens itself before the first one as `slirpy run`
does (harden.py: emptied mount view keeping /etc, /run and the runtime directory with
holder.sock and holder-ctl.sock; capabilities; no_new_privs; the same seccomp allow-list).
`SLIRPY_HOLDER_NO_SANDBOX=1` in the environment of the `run --network` that starts the holder
turns that off, for debugging. Everything the allow-list forbids (the registry and the
definitions, the keeper, bridges and nft inside the keeper's namespaces, members' pidfds) is
done by the PLUMBER (plumber.py), a child forked before hardening, on request; the router
applies its results (routes, names, ports) on the loop. A `sync` request on the control socket
(`holder-ctl.sock`, one JSON line each way) asks it for a plan; so does a member's exit, which
the plumber reports. If the plumber dies the router stops (it cannot fork another: the filter
forbids it); as after a SIGKILLed router, the next `run --network` starts both again for the
same keeper. With no member left for `IDLE_GRACE` seconds, the plumber removes the holder's
files and ends the keeper, and the router exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from typing import Any, Callable

from slirpy.networks import members as _members, paths
from slirpy.networks.plumber import Plumber, PlumberError

IDLE_GRACE = 2.0
NO_SANDBOX_ENV = "SLIRPY_HOLDER_NO_SANDBOX"
log = logging.getLogger("slirpy.router")


class Router:
    def __init__(self, runtime: Any, plumber: Plumber, target: Any) -> None:
        self.runtime = runtime
        self.plumber = plumber
        self.target = target                     # slirp4netns.AttachedTarget: send_signal stops us
        self.members: list[_members.Member] = []
        self.forwards: dict[str, list[int]] = {}  # member name -> forward ids we made
        self.autos: dict[str, tuple[Any, int]] = {}   # member name -> (its AutoPorts, /proc/PID/net fd)
        self.idle_handle: asyncio.TimerHandle | None = None
        self.stopping = False
        self.plumber_dead = False
        self.lock = asyncio.Lock()
        self.control: asyncio.AbstractServer | None = None

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
                reply = {"ok": await self.plumber.call("rules")}
            elif op == "ping":
                reply = {"ok": {"pid": os.getpid(), "plumber": self.plumber.pid}}
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

    # -- the plumber -----------------------------------------------------------------------

    def watch_plumber(self) -> None:
        """A byte on the events pipe: a member exited; its end-of-file: the plumber died."""
        asyncio.get_running_loop().add_reader(self.plumber.events_fd, self._plumber_event)

    def _plumber_event(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            data = os.read(self.plumber.events_fd, 4096)
        except BlockingIOError:
            return
        if data:
            loop.create_task(self.sync())
            return
        loop.remove_reader(self.plumber.events_fd)
        self.plumber_dead = True
        if not self.stopping:
            log.info("the plumber (pid %d) died: stopping; the next `run --network` starts both again",
                     self.plumber.pid)
            self.target.send_signal(signal.SIGTERM)

    # -- sync ------------------------------------------------------------------------------

    async def sync(self) -> dict:
        """Bring everything in line with the registry; {"ok": {...}} with per-member port errors."""
        async with self.lock:
            plan = await self.plumber.call("plan")
            self.members = [_members.Member(**m) for m in plan["members"]]
            stack = self.runtime.stack
            if hasattr(stack, "set_routed"):
                stack.set_routed(plan["routed"])
            if hasattr(stack, "set_names"):
                stack.set_names(plan["views"], plan["domains"])
            errors = await self._sync_ports()
            await self._sync_autos(errors)
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

    async def _sync_autos(self, errors: dict[str, str]) -> None:
        """One AutoPorts (`-p auto`) per member that asked, reading its socket tables through
        the /proc/PID/net the plumber opens for us; stopped, with its forwards, when it leaves."""
        live = {m.name: m for m in self.members}
        for name in [n for n in self.autos if n not in live]:
            self.stop_auto(name)
        for m in self.members:
            if m.auto_publish is None or not m.ns_pid or m.name in self.autos or m.name in errors:
                continue
            try:
                _, fds = await self.plumber.call_fds("proc_net", name=m.name)
            except PlumberError as e:
                errors[m.name] = f"-p auto: {e}"
                continue
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                errors[m.name] = "-p auto: the plumber sent no /proc/PID/net"
                continue
            self.autos[m.name] = (self._start_auto(m, fds[0]), fds[0])

    def _start_auto(self, m: _members.Member, net_fd: int) -> Any:
        from slirpy.autoports import AutoPorts
        from slirpy.config import AutoPublish
        assert m.auto_publish is not None
        first = next(iter(m.networks.values()))
        auto = AutoPorts(self.runtime.ports,
                         AutoPublish(tuple(m.auto_publish["protos"]), m.auto_publish["host_addr"]),
                         0, self.runtime.counters, member=(first["ip"], first.get("ip6")))
        auto.read_from(net_fd)
        auto.start(asyncio.get_running_loop())
        return auto

    def stop_auto(self, name: str) -> None:
        auto, fd = self.autos.pop(name)
        auto.stop()
        for fid in auto.forward_ids():
            self.runtime.ports.remove_forward(fid)
        os.close(fd)

    # -- the end -----------------------------------------------------------------------------

    def _idle_check(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if not self.members and not self.stopping:
            loop = asyncio.get_running_loop()
            self.idle_handle = loop.call_later(IDLE_GRACE, lambda: loop.create_task(self._maybe_stop()))

    async def _maybe_stop(self) -> None:
        async with self.lock:
            stop = await self.plumber.call("release_if_idle")
            if not stop:                            # a member came meanwhile: sync once we are done
                asyncio.get_running_loop().create_task(self.sync())
                return
            self.stopping = True
            api = getattr(self.runtime, "api", None)
            if api is not None:
                api.path = ""                       # its file is gone already; never unlink a successor's
            self.target.send_signal(signal.SIGTERM)


# ------------------------------------------------------------------ start-up


def _config() -> Any:
    from slirpy.config import build_net_config
    return build_net_config(allow_host_loopback=True, ipv6=True)


def _harden_step(runtime: Any, api_socket: str) -> Callable[[], None] | None:
    """What serve_sandbox calls before the first frame (harden.py, as `slirpy run` does, with
    the runtime directory kept: holder.sock and holder-ctl.sock live there); None when
    NO_SANDBOX_ENV is set. Raises HardenError."""
    if os.environ.get(NO_SANDBOX_ENV, "") not in ("", "0"):
        log.info("%s is set: the router runs unhardened", NO_SANDBOX_ENV)
        return None
    from slirpy.harden import HardenOptions, before_loop, harden_runtime, runtime_options

    cfg = runtime.config
    opts = runtime_options(HardenOptions(), api_socket=api_socket, autoports_pid=None,
                           resolv_conf=cfg.resolv_conf if cfg.dns_enabled and cfg.dns_upstream is None else None)
    before_loop(opts)

    def step() -> None:
        for warning in harden_runtime(runtime, opts).warnings:
            log.info("warning: %s", warning)
    return step


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
        api_socket, control = os.path.abspath(paths.holder_socket()), os.path.abspath(paths.holder_control())
        plumber = Plumber.fork(close=(ready_fd,) if ready_fd >= 0 else ())   # before the heavy imports
        keeper_pid = plumber.call_blocking("start")["keeper_pid"]
        from slirpy.sandbox import AttachOptions, attach_tap
        config = _config()
        tap = attach_tap(AttachOptions(tap_name="tap0", net=config, configure=True, pid=keeper_pid))
        keeper_pidfd = os.pidfd_open(keeper_pid)
    except Exception as e:                  # noqa: BLE001
        ready(f"cannot start the network holder: {' '.join(str(e).split())}")
        return 1
    import uvloop

    from slirpy.harden import HardenError
    from slirpy.runtime import Runtime
    from slirpy.serve import serve_sandbox
    from slirpy.slirp4netns import AttachedTarget

    runtime = Runtime(config, tap.fd, vnet_hdr=tap.vnet_hdr, offload=tap.offload)
    runtime.linger = 0.0
    runtime.prepare_ports((), api_socket=api_socket)
    target = AttachedTarget(keeper_pidfd, -1, -1)
    router = Router(runtime, plumber, target)

    async def setup() -> None:
        await router.serve_control(control)
        router.watch_plumber()
        await plumber.call("ready")
        router._idle_check()
        ready("ok")

    try:
        step = _harden_step(runtime, api_socket)
        return uvloop.run(serve_sandbox(runtime, target, setup, step))
    except (HardenError, PlumberError) as e:
        ready(f"cannot start the network holder: {' '.join(str(e).split())}")
        log.info("stopping: %s", e)
        return 1
    except Exception as e:                  # noqa: BLE001 - before "ok": the member says why
        if ready_fd < 0:
            raise
        ready(f"cannot start the network holder: {' '.join(str(e).split()) or type(e).__name__}")
        log.exception("stopping before ready")
        return 1
    finally:
        if not router.stopping and not router.plumber_dead:
            try:                                # the keeper died under us: nothing holds the networks
                plumber.call_blocking("keeper_gone")
            except PlumberError:
                pass
        target.close()
        os.close(tap.fd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
