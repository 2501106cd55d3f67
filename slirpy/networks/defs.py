"""Network definitions: what `slirpy network create` stores and every other part reads.

A definition is a small JSON file, `<data_dir>/networks/<name>.json`, written atomically
(rename). It holds what the user asked for (subnet, gateway, internal, rules, IPv6) and the
network's index I, which names its bridge (`sbr<I>`) and picks its default subnet
10.89.I.0/24. Validation lives here too, each refusal one line naming the value and what is
allowed: `DefError.usage` marks a malformed value (exit 2), the others are refusals of a
well-formed request (exit 1).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field

from slirpy.config import DEFAULT_CIDR, DEFAULT_CIDR6
from slirpy.networks.paths import networks_dir

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")
MAX_NETWORKS = 256                # one /24 each out of 10.89.0.0/16
DEFAULT_POOL = ipaddress.IPv4Network("10.89.0.0/16")
RESERVED = (ipaddress.IPv4Network(DEFAULT_CIDR),)     # plain runs' network (and the holder's tap0)
RESERVED6 = (ipaddress.IPv6Network(DEFAULT_CIDR6),)
MAX_RULES = 64                    # --ingress-allow / --egress-deny entries per network

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class DefError(Exception):
    """A bad definition or request; str() is the one line to print. `usage`: exit 2, else 1."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass
class NetworkDef:
    name: str
    index: int
    subnet: str
    gateway: str
    internal: bool = False
    ingress_allow: list[str] = field(default_factory=list)
    egress_deny: list[str] = field(default_factory=list)
    subnet6: str | None = None
    gateway6: str | None = None
    created: float = 0.0

    @property
    def bridge(self) -> str:
        return f"sbr{self.index}"

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def net6(self) -> ipaddress.IPv6Network | None:
        return ipaddress.IPv6Network(self.subnet6) if self.subnet6 else None

    def to_json(self) -> dict:
        return asdict(self)


def check_name(name: str, what: str = "network name") -> str:
    if not NAME_RE.fullmatch(name):
        raise DefError(f"invalid {what} {name!r}: 1-31 characters, lower-case letters, digits, "
                       "'_' and '-', starting with a letter or digit", usage=True)
    return name


def parse_rule_cidr(text: str, option: str) -> str:
    """A CIDR of --ingress-allow / --egress-deny, IPv4 or IPv6, host bits dropped."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise DefError(f"invalid {option} {text!r}: must be an IPv4 or IPv6 network such as "
                       "203.0.113.0/24 or 2001:db8::/32", usage=True) from None


def _path(name: str) -> str:
    return os.path.join(networks_dir(), f"{name}.json")


def load(name: str) -> NetworkDef | None:
    try:
        with open(_path(check_name(name)), encoding="utf-8") as f:
            data = json.load(f)
        return NetworkDef(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise DefError(f"network {name!r}: its definition {_path(name)} is damaged ({e}); "
                       f"remove it with `slirpy network rm -f {name}`") from None


def require(name: str) -> NetworkDef:
    d = load(name)
    if d is None:
        raise DefError(f"unknown network {name!r}: `slirpy network ls` lists them, "
                       "`slirpy network create NAME` makes one")
    return d


def all_defs() -> list[NetworkDef]:
    out = []
    for entry in sorted(os.listdir(networks_dir())):
        if entry.endswith(".json") and NAME_RE.fullmatch(entry[:-5]):
            try:
                d = load(entry[:-5])
            except DefError:
                continue
            if d is not None:
                out.append(d)
    return out


def save(d: NetworkDef) -> None:
    path = _path(d.name)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(d.to_json(), f, indent=1)
    os.replace(tmp, path)


def remove(name: str) -> None:
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass


def _overlaps(net: IPNet, others: list[IPNet]) -> IPNet | None:
    for o in others:
        if net.version == o.version and net.overlaps(o):
            return o
    return None


def _parse_subnet(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise DefError(f"invalid --subnet {text!r}: must be an IPv4 network address with a prefix "
                       "length from 8 to 29, such as 10.89.7.0/24 (no host bits)", usage=True) from None
    if not 8 <= net.prefixlen <= 29:
        raise DefError(f"invalid --subnet {text!r}: prefix length must be from 8 to 29", usage=True)
    return net


def _parse_subnet6(text: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError:
        net = None
    if net is None or net.prefixlen != 64:
        raise DefError(f"invalid --subnet6 {text!r}: must be an IPv6 /64 network address such "
                       "as fd89:0:0:7::/64", usage=True)
    return net


def _gateway(text: str | None, net: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    if text is None:
        return net.network_address + 1
    try:
        gw = ipaddress.IPv4Address(text)
    except ValueError:
        raise DefError(f"invalid --gateway {text!r}: must be an IPv4 address", usage=True) from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise DefError(f"invalid --gateway {text}: must be a host address inside the subnet {net}")
    return gw


def new_def(name: str, existing: list[NetworkDef], *, subnet: str | None = None,
            gateway: str | None = None, internal: bool = False, ingress_allow: list[str] = [],
            egress_deny: list[str] = [], ipv6: bool = False, subnet6: str | None = None,
            now: float = 0.0) -> NetworkDef:
    """Validate a `network create` against the existing definitions (no I/O)."""
    check_name(name)
    if any(d.name == name for d in existing):
        raise DefError(f"network {name!r} already exists (`slirpy network inspect {name}`)")
    if subnet6 is not None and not ipv6:
        raise DefError(f"--subnet6 {subnet6} needs --ipv6", usage=True)
    if len(ingress_allow) > MAX_RULES or len(egress_deny) > MAX_RULES:
        raise DefError(f"too many rules: at most {MAX_RULES} --ingress-allow and {MAX_RULES} "
                       "--egress-deny per network", usage=True)
    used = {d.index for d in existing}
    free = [i for i in range(MAX_NETWORKS) if i not in used]
    if not free:
        raise DefError(f"too many networks: at most {MAX_NETWORKS}")
    index = free[0]
    taken4: list[IPNet] = [*RESERVED, *(d.net for d in existing)]
    if subnet is None:
        preferred = ipaddress.IPv4Network(f"10.89.{index}.0/24")
        candidates = [preferred, *DEFAULT_POOL.subnets(new_prefix=24)]
        net = next((n for n in candidates if _overlaps(n, taken4) is None), None)
        if net is None:
            raise DefError("no free /24 left in 10.89.0.0/16: give --subnet")
    else:
        net = _parse_subnet(subnet)
        clash = _overlaps(net, taken4)
        if clash is not None:
            owner = next((d.name for d in existing if d.net == clash), None)
            raise DefError(f"invalid --subnet {net}: overlaps {clash}"
                           + (f" of network {owner!r}" if owner else " (slirpy's own 10.0.2.0/24)"))
    gw = _gateway(gateway, net)
    net6 = gw6 = None
    if ipv6:
        taken6: list[IPNet] = [*RESERVED6, *(d.net6 for d in existing if d.net6 is not None)]
        if subnet6 is None:
            net6 = next(n for n in (ipaddress.IPv6Network(f"fd89:0:0:{i:x}::/64") for i in range(65536))
                        if _overlaps(n, taken6) is None)
        else:
            net6 = _parse_subnet6(subnet6)
            clash = _overlaps(net6, taken6)
            if clash is not None:
                raise DefError(f"invalid --subnet6 {net6}: overlaps {clash}")
        gw6 = str(net6.network_address + 1)
    return NetworkDef(name=name, index=index, subnet=str(net), gateway=str(gw), internal=internal,
                      ingress_allow=list(ingress_allow), egress_deny=list(egress_deny),
                      subnet6=str(net6) if net6 else None, gateway6=gw6, created=now)


def pick_ip(d: NetworkDef, used: set[str], pinned: str | None = None) -> str:
    """A member address: `pinned` (checked), else the lowest free from gateway-network+2."""
    net = d.net
    reserved = {str(net.network_address), str(net.broadcast_address), d.gateway}
    if pinned is not None:
        try:
            ip = ipaddress.IPv4Address(pinned)
        except ValueError:
            raise DefError(f"invalid --ip {pinned!r}: must be an IPv4 address", usage=True) from None
        if ip not in net or str(ip) in reserved:
            raise DefError(f"invalid --ip {ip}: must be a host address of network {d.name!r} "
                           f"({net}), not its gateway {d.gateway}")
        if str(ip) in used:
            raise DefError(f"--ip {ip} is already in use on network {d.name!r}")
        return str(ip)
    for ip in net.hosts():
        if int(ip) - int(net.network_address) >= 2 and str(ip) not in reserved and str(ip) not in used:
            return str(ip)
    raise DefError(f"network {d.name!r} ({net}) has no free address left")


def ip6_for(d: NetworkDef, ip: str) -> str | None:
    """The member's IPv6 address: the same host part as its IPv4 one, in the /64."""
    net6 = d.net6
    if net6 is None:
        return None
    host = int(ipaddress.IPv4Address(ip)) - int(d.net.network_address)
    return str(net6.network_address + host)
