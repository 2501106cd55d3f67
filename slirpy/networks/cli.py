"""`slirpy network create|ls|inspect|rm|connect|disconnect`: the commands, parsing only.

Each command takes the state lock for what it changes and prints one line on a refusal
(usage errors exit 2, refusals of a well-formed request 1), through `_fail`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import NoReturn

import click


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"slirpy: {message}", err=True)
    sys.exit(code)


def _guard(fn):  # type: ignore[no-untyped-def]
    """Turn the package's one-line errors into `slirpy: ...` and the right exit status."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        from slirpy.networks.defs import DefError
        from slirpy.networks.holder import HolderError
        from slirpy.networks.holderns import HolderError as NsError
        from slirpy.registry import RegistryError
        try:
            return fn(*args, **kwargs)
        except DefError as e:
            _fail(str(e), 2 if e.usage else 1)
        except (HolderError, NsError, RegistryError) as e:
            _fail(str(e), 1)
    return wrapper


def holder_rule_counters(api_socket: str) -> dict:
    """For `slirpy stats`: {"nft": {rule comment: {packets, bytes}}} when `api_socket` is the
    networks holder's (counts since the holder started), else {}."""
    import os
    try:
        from slirpy.networks import holder, paths
        if os.path.realpath(api_socket) != os.path.realpath(paths.holder_socket()):
            return {}
        info = holder.request("rules")
    except Exception:                   # noqa: BLE001 - stats never fails for want of rules
        return {}
    return {"nft": info.get("counters", {})} if isinstance(info, dict) else {}


@click.group("network")
def network() -> None:
    """Named networks of sandboxes: members reach each other by name; networks are isolated."""


@network.command("create")
@click.option("--subnet", metavar="CIDR", help="IPv4 subnet [default: a free 10.89.I.0/24].")
@click.option("--gateway", metavar="IP", help="Gateway address [default: the subnet's first].")
@click.option("--internal", is_flag=True, help="Members reach each other only; nothing leaves.")
@click.option("--ingress-allow", multiple=True, metavar="CIDR",
              help="Only these clients reach published ports (repeatable; others: RST / dropped).")
@click.option("--egress-deny", multiple=True, metavar="CIDR",
              help="Members' connections to these addresses fail at once (repeatable).")
@click.option("--ipv6", is_flag=True, help="IPv6 too (names answer AAAA).")
@click.option("--subnet6", metavar="PREFIX/64", help="IPv6 subnet [default: fd89:0:0:I::/64].")
@click.argument("name")
@_guard
def create(subnet: str | None, gateway: str | None, internal: bool, ingress_allow: tuple[str, ...],
           egress_deny: tuple[str, ...], ipv6: bool, subnet6: str | None, name: str) -> None:
    """Create network NAME (stored in the data directory; brought up by its first member)."""
    from slirpy import registry
    from slirpy.networks import defs
    allow = [defs.parse_rule_cidr(c, "--ingress-allow") for c in ingress_allow]
    deny = [defs.parse_rule_cidr(c, "--egress-deny") for c in egress_deny]
    defs.check_name(name)
    with registry.state_lock():
        d = defs.new_def(name, defs.all_defs(), subnet=subnet, gateway=gateway, internal=internal,
                         ingress_allow=allow, egress_deny=deny, ipv6=ipv6, subnet6=subnet6,
                         now=time.time())
        defs.save(d)
    click.echo(name)


def _members_of(name: str) -> list[dict]:
    from slirpy import registry
    from slirpy.networks import members
    out = []
    for m in members.from_records(registry.live()):
        if name in m.networks:
            info = m.networks[name]
            out.append({"name": m.name, "pid": m.pid, "ip": info["ip"], "ip6": info.get("ip6"),
                        "aliases": info.get("aliases", []), "iface": info.get("iface"),
                        "ports": m.ports})
    return out


@network.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_guard
def ls(as_json: bool) -> None:
    """List the networks."""
    from slirpy.networks import defs
    rows = [{**d.to_json(), "members": len(_members_of(d.name))} for d in defs.all_defs()]
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'NAME':16} {'SUBNET':18} {'GATEWAY':15} {'MEMBERS':>7}  FLAGS")
    for r in rows:
        flags = ",".join(f for f, on in (("internal", r["internal"]), ("ipv6", bool(r["subnet6"])),
                                         ("ingress-allow", bool(r["ingress_allow"])),
                                         ("egress-deny", bool(r["egress_deny"]))) if on)
        click.echo(f"{r['name']:16} {r['subnet']:18} {r['gateway']:15} {r['members']:>7}  {flags}")


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@_guard
def inspect(names: tuple[str, ...]) -> None:
    """JSON: definition, members, and the nft rules with their counters."""
    from slirpy.networks import defs, holder
    info: dict = {"rules": [], "counters": {}}
    if holder.holder_status() == "running":
        info = holder.request("rules") or info          # type: ignore[assignment]
    out = []
    for name in names:
        d = defs.require(name)

        def ours(comment: object) -> bool:
            return str(comment or "").startswith(f"{name}: ") or comment == "host loopback not allowed"
        out.append({**d.to_json(), "bridge": d.bridge, "members": _members_of(name),
                    "rules": [r for r in info["rules"] if ours(r.get("comment"))],
                    "counters": {k: v for k, v in info["counters"].items() if ours(k)}})
    click.echo(json.dumps(out if len(out) > 1 else out[0], indent=1))


@network.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even with members (they lose this network).")
@click.argument("names", nargs=-1, required=True)
@_guard
def rm(force: bool, names: tuple[str, ...]) -> None:
    """Remove networks (refused while a member runs, without -f)."""
    from slirpy import registry
    from slirpy.networks import defs, holder
    changed = False
    with registry.state_lock():
        todo = []
        for name in names:                       # check them all first: a refusal changes nothing
            if defs.load(name) is None:
                if not force:
                    defs.require(name)
                continue
            running = _members_of(name)
            if running and not force:
                raise defs.DefError(f"network {name!r} has running members "
                                    f"({', '.join(m['name'] for m in running)}): stop them, or rm -f")
            todo.append(name)
            changed = changed or bool(running)
        for name in todo:
            defs.remove(name)
            click.echo(name)
    if changed and holder.holder_status() == "running":
        holder.request("sync")


@network.command("connect")
@click.option("--ip", metavar="IP", help="Address on the network [default: the lowest free].")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS", help="Another name (repeatable).")
@click.argument("name")
@click.argument("sandbox")
@_guard
def connect(ip: str | None, aliases: tuple[str, ...], name: str, sandbox: str) -> None:
    """Add running SANDBOX (a `run --network` member) to network NAME: a new interface."""
    from slirpy.networks import runtime_change
    runtime_change.connect(name, sandbox, ip, list(aliases))


@network.command("disconnect")
@click.argument("name")
@click.argument("sandbox")
@_guard
def disconnect(name: str, sandbox: str) -> None:
    """Remove running SANDBOX from network NAME (its interface there goes away)."""
    from slirpy.networks import runtime_change
    runtime_change.disconnect(name, sandbox)
