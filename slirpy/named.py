"""Every `slirpy run` under a name: the choice among its network modes (`--network`), its
registration (`slirpy.registry`) around the run, and its hostname and /etc files.

runcmd.py (`slirpy run`'s options parsed) calls `run_named`; the private network (no
`--network`) goes on to `launch.run_sandbox` as before, `none`, `host` and `sandbox:NAME` to
the light parent of `plainrun`, and a named network to `slirpy.networks.run_member`.  The registration is two small
file writes (the name before the sandbox starts, its pids and ports once it has) and one unlink
at the end: a plain run's start-up time stays what it was.
"""

from __future__ import annotations

import importlib
import os

from . import registry
from .launch import fail
from .sandbox.etcfiles import check_hostname, dns_resolv_text, hosts_text, parse_add_host, parse_dns, read_text

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable

    from .config import NetConfig, PortSpec

SUN_PATH_MAX = 107          # bytes of a UNIX socket path


# Naming and NamedRun are plain classes, not dataclasses: `slirpy run` imports this module on
# its way to its command's start, where a dataclass's generated methods cost their compilation.


class Naming:
    """--name, --hostname, --add-host, --dns, --ip, --network-alias, checked."""
    __slots__ = ("name", "hostname", "add_hosts", "dns", "ips", "aliases")

    def __init__(self, name: str | None = None, hostname: str | None = None,
                 add_hosts: list[tuple[str, str]] | None = None, dns: list[str] | None = None,
                 ips: list[str] | None = None, aliases: list[str] | None = None) -> None:
        self.name = name
        self.hostname = hostname
        self.add_hosts: list[tuple[str, str]] = add_hosts if add_hosts is not None else []
        self.dns: list[str] = dns if dns is not None else []
        self.ips: list[str] = ips if ips is not None else []
        self.aliases: list[str] = aliases if aliases is not None else []


def parse_naming(name: str | None, hostname: str | None, add_host: tuple[str, ...], dns: tuple[str, ...],
                 ips: tuple[str, ...] = (), aliases: tuple[str, ...] = ()) -> Naming:
    """Raises ValueError (registry.BadName, EtcError) with one line naming the value."""
    if name is not None:
        registry.check_name(name)
    for alias in aliases:
        check_hostname(alias, "--network-alias")
    return Naming(name=name, hostname=check_hostname(hostname) if hostname is not None else None,
                  add_hosts=[parse_add_host(t) for t in add_host], dns=[parse_dns(t) for t in dns],
                  ips=list(ips), aliases=list(aliases))


def network_mode(values: tuple[str, ...]) -> str:
    """"private" (no --network), "none", "host", "sandbox:NAME" or "network" (named networks).
    Raises ValueError (a usage error) for a combination that cannot be."""
    special = [v for v in values if v in ("none", "host") or v.startswith("sandbox:")]
    if not values:
        return "private"
    if special and len(values) > 1:
        raise ValueError(f"--network {special[0]} cannot be combined with another --network")
    if special:
        mode = special[0]
        if mode.startswith("sandbox:"):
            registry.check_name(mode.removeprefix("sandbox:"))
        return mode
    if "" in values:
        raise ValueError("invalid --network '': expected none, host, sandbox:NAME or a network name")
    return "network"


def private_only_options(mode: str, given: dict[str, bool]) -> None:
    """A mode without slirpy's own network (none, host, sandbox:NAME) refuses the options that
    only that network has.  Raises ValueError naming the first."""
    if mode in ("private", "network"):
        return
    for option, was_given in given.items():
        if was_given:
            raise ValueError(f"{option} does nothing with --network {mode} (no network of slirpy's "
                             "own: it works without --network or with a named network)")


def network_options(mode: str, given: dict[str, bool]) -> None:
    """A member of a named network is served by the network's router, shared by every member:
    the options that configure slirpy's own network (MTU, addresses, limits, capture, API...)
    are the router's, not the member's.  Given with --network NAME, the first is refused."""
    if mode != "network":
        return
    for option, was_given in given.items():
        if was_given:
            raise ValueError(f"{option} does nothing with --network NAME: the network's router, "
                             "shared by every member, has its own (a member has -p, --publish-auto-addr, "
                             "--ip, --network-alias, --allow-host-loopback, --dns, --name, --hostname, --add-host)")


def check_run_options(network: tuple[str, ...], name: str | None, hostname: str | None,
                      add_hosts: tuple[str, ...], dns: tuple[str, ...], ips: tuple[str, ...],
                      aliases: tuple[str, ...], private_only: dict[str, bool],
                      router_wide: dict[str, bool] | None = None) -> tuple[str, Naming]:
    """`slirpy run`'s naming and mode options; a bad one ends slirpy with one line (2)."""
    try:
        mode = network_mode(network)
        naming = parse_naming(name, hostname, add_hosts, dns, ips, aliases)
        private_only_options(mode, private_only)
        network_options(mode, router_wide or {})
        if (ips or aliases) and mode != "network":
            raise ValueError(f"{'--ip' if ips else '--network-alias'} needs --network NAME (a named network)")
        if hostname is not None and mode.startswith("sandbox:"):
            raise ValueError(f"--hostname does nothing with --network {mode}: the sandbox shares "
                             f"{mode.removeprefix('sandbox:')}'s hostname")
    except ValueError as e:
        fail(str(e), 2)
    return mode, naming


class NamedRun:
    """What launch.run_sandbox needs of a named private run."""
    __slots__ = ("rec", "hosts_text", "resolv_text")

    def __init__(self, rec: registry.SandboxRecord, hosts_text: str | None, resolv_text: str | None) -> None:
        self.rec = rec
        self.hosts_text = hosts_text
        self.resolv_text = resolv_text

    def options(self) -> dict[str, Any]:
        return {"hostname": self.rec.hostname, "hosts_text": self.hosts_text}

    def started(self, ns_pid: int, published: list[PortSpec]) -> None:
        ports = [{"proto": p.proto, "host_addr": p.host_addr, "host_port": p.host_port,
                  "guest_port": p.guest_port} for p in published]
        if self.rec.name:
            registry.update(self.rec.name, self.rec.pid, ns_pid=ns_pid, ports=ports,
                            api_socket=self.rec.api_socket, hostname=self.rec.hostname)


def _claim(naming: Naming, mode: str) -> registry.SandboxRecord:
    """Register this process; a taken or bad name ends slirpy (1).  Without --name, a broken
    state directory only costs the name (a warning), never the run."""
    try:
        rec = registry.claim(naming.name, os.getpid(), mode=mode)
    except registry.RegistryError as e:
        if naming.name is not None or isinstance(e, registry.NameTaken):
            fail(str(e), 1)
        fail_soft = f"slirpy: warning: running without a name: {e}"
        os.write(2, (fail_soft + "\n").encode())
        rec = registry.SandboxRecord(name="", pid=os.getpid(), mode=mode)
    rec.hostname = naming.hostname or rec.name or None
    return rec


def _release(rec: registry.SandboxRecord) -> None:
    if rec.name:
        try:
            registry.unregister(rec.name, rec.pid)
        except (OSError, registry.RegistryError):
            pass


def run_named(mode: str, networks: list[str], config: NetConfig, argv: list[str], naming: Naming, *,
              map_subuids: bool, api_socket: str | None, run_private: Callable[..., int]) -> int:
    """Run `argv` in network `mode` under a name; its exit code.  `run_private(named=...,
    api_socket=...)` is launch.run_sandbox with the other options already bound."""
    if mode == "network":
        return _run_member(networks, config, argv, naming, map_subuids)
    rec = _claim(naming, mode)
    if mode == "private":       # removes its own record (it may be hardened by then)
        return _run_private(rec, config, naming, api_socket, run_private)
    try:
        return _run_light(rec, mode, config, argv, naming, map_subuids)
    finally:
        _release(rec)


def _run_private(rec: registry.SandboxRecord, config: NetConfig, naming: Naming, api_socket: str | None,
                 run_private: Callable[..., int]) -> int:
    if api_socket is None and rec.name:
        path = registry.default_api_socket(rec.name)
        api_socket = path if len(path.encode()) <= SUN_PATH_MAX else None
    rec.api_socket = os.path.abspath(api_socket) if api_socket else None
    addresses = [str(config.guest)] + ([str(config.guest6)] if config.ipv6 else [])
    names = [n for n in (rec.name, rec.hostname) if n]
    hosts = hosts_text(names, addresses, naming.add_hosts, read_text("/etc/hosts"))
    resolv = dns_resolv_text(naming.dns, read_text(config.resolv_conf)) if naming.dns else None
    # This process serves the sandbox and (by default) hardens itself: its runtime directory is
    # out of sight by the time the command exits, so the record is removed through an fd.
    own = registry.OwnRecord(rec.name) if rec.name else None
    try:
        return run_private(named=NamedRun(rec, hosts, resolv), api_socket=api_socket)
    finally:
        if own is not None:
            own.remove()


def _run_light(rec: registry.SandboxRecord, mode: str, config: NetConfig, argv: list[str], naming: Naming,
               map_subuids: bool) -> int:
    from .plainrun import mode_options, run_light
    from .sandbox import SandboxError

    try:
        opts = mode_options(mode, argv, config, rec, add_hosts=naming.add_hosts, dns=naming.dns,
                            map_subuids=map_subuids, resolv_conf=config.resolv_conf)
        return run_light(opts, started=lambda sb: rec.name and registry.update(
            rec.name, rec.pid, ns_pid=sb.ns_pid, mode=rec.mode, hostname=rec.hostname, api_socket=rec.api_socket),
            record=rec.name or None)
    except SandboxError as e:
        fail(str(e), 1)


def _run_member(networks: list[str], config: NetConfig, argv: list[str], naming: Naming,
                map_subuids: bool) -> int:
    """A named network's member: slirpy.networks does it all (registration included).

    The contract with it: `run_member(networks=[NAME, ...] (the --network values, in order),
    argv, config (the NetConfig of the other options: -p in config.ports, limits, ...),
    name (--name, or None: take registry.claim(None, ...)'s auto name), hostname (--hostname or
    None: the name), ips (--ip values), aliases (--network-alias values), add_hosts ([(name,
    ip)]: etcfiles.hosts_text's), dns (--dns addresses, [] for the gateway), map_subuids)`
    returns the command's exit code; it ends slirpy itself (launch.fail) on a refusal.  It
    starts the member with plainrun.run_light(SandboxOptions(net_mode="member", ...))."""
    try:
        nets: Any = importlib.import_module("slirpy.networks")
    except ImportError as e:
        if e.name not in ("slirpy.networks", None):
            raise
        fail(f"unknown network {networks[0]}", 1)
    return int(nets.run_member(networks=networks, argv=argv, config=config, name=naming.name,
                               hostname=naming.hostname, ips=naming.ips, aliases=naming.aliases,
                               add_hosts=naming.add_hosts, dns=naming.dns, map_subuids=map_subuids))
