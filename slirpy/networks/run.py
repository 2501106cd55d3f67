"""`slirpy run --network NAME`: a member's whole run, from registration to its exit.

named.py hands over here (`run_member`); the sandbox itself is nm15's member mode driven by
plainrun's light parent (no event loop in this process: a member costs the kernel's memory
and a sleeping Python, nothing more). Order: register and sync (join.py: addresses, bridges,
nft, routes, names and `-p` ports are in place), start the sandbox with `member_setup`
(veths, addresses), let the command run, then unregister and sync again. A member killed
with SIGKILL is cleaned up by the router, which watches this process's pidfd.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from slirpy import registry
from slirpy.config import NetConfig


def _fail(message: str, code: int) -> NoReturn:
    os.write(2, f"slirpy: {message}\n".encode())
    sys.exit(code)


def run_member(*, networks: list[str], argv: list[str], config: NetConfig, name: str | None,
               hostname: str | None, ips: list[str], aliases: list[str],
               add_hosts: list[tuple[str, str]], dns: list[str], map_subuids: bool = False) -> int:
    """Run `argv` as a member of `networks`; its exit code (slirpy's own errors end the process)."""
    from slirpy.networks import holder
    from slirpy.networks.defs import DefError, check_name
    from slirpy.networks.join import NetRequest, register_member
    if len(ips) > len(networks):
        _fail(f"--ip given {len(ips)} times for {len(networks)} --network: one --ip pins the address "
              "on the --network at the same position", 2)
    requests = [NetRequest(n, ips[i] if i < len(ips) else None) for i, n in enumerate(networks)]
    try:
        for r in requests:
            check_name(r.network)
        rec, state, atts = register_member(name, requests, [a.lower() for a in aliases],
                                           config.allow_host_loopback, [str(p) for p in config.ports],
                                           hostname, auto_publish=_auto_record(config))
    except DefError as e:
        _fail(str(e), 2 if e.usage else 1)
    except (holder.HolderError, registry.RegistryError) as e:
        _fail(str(e), 1)
    try:
        return _run(rec, state.keeper_pid, atts, argv, config, add_hosts, dns)
    finally:
        # The router sees this process end (its pidfd) and syncs then: no need to wait for it.
        registry.unregister(rec.name, rec.pid)


def _auto_record(config: NetConfig) -> dict | None:
    """The record's form of `-p auto` (the router scans the member's socket tables)."""
    auto = config.auto_publish
    return None if auto is None else {"protos": list(auto.protos), "host_addr": auto.host_addr}


def _started(rec: registry.SandboxRecord, ns_pid: int) -> None:
    """The sandbox runs: record a process inside it; with `-p auto`, the router needs that
    process to read the member's socket tables, so it syncs again (a failure is a warning:
    the command runs without auto-published ports)."""
    registry.update(rec.name, rec.pid, ns_pid=ns_pid)
    if rec.auto_publish is None:
        return
    from slirpy.networks import holder
    try:
        holder.request("sync")
    except holder.HolderError as e:
        os.write(2, f"slirpy: warning: -p auto: {e}\n".encode())


def _run(rec: registry.SandboxRecord, keeper_pid: int, atts: list, argv: list[str], config: NetConfig,
         add_hosts: list[tuple[str, str]], dns: list[str]) -> int:
    from slirpy.networks.member import member_setup_for, resolv_text
    from slirpy.plainrun import run_light
    from slirpy.sandbox import SandboxError, SandboxOptions
    from slirpy.sandbox.etcfiles import dns_resolv_text, hosts_text, read_text
    resolv = dns_resolv_text(dns, read_text(config.resolv_conf)) if dns else resolv_text(atts[0].network)
    addrs = [atts[0].ip] + ([atts[0].ip6] if atts[0].ip6 else [])
    names = [n for n in (rec.name, rec.hostname) if n]
    hosts = hosts_text(names, addrs, add_hosts, read_text("/etc/hosts"))
    try:
        keeper_net = os.open(f"/proc/{keeper_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        _fail(f"the network holder (pid {keeper_pid}) is gone: {e.strerror}", 1)
    opts = SandboxOptions(argv=argv, net=config, resolv_conf_text=resolv, hosts_text=hosts,
                          hostname=rec.hostname, net_mode="member",
                          userns_path=f"/proc/{keeper_pid}/ns/user",
                          member_setup=member_setup_for(atts, keeper_net))
    try:
        return run_light(opts, started=lambda sb: _started(rec, sb.ns_pid),
                         record=rec.name)
    except SandboxError as e:
        _fail(str(e), 1)
    finally:
        os.close(keeper_net)
