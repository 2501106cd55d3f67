"""Name views: the DNS names of sandbox networks, answered by the forwarder itself.

Why a module: members of a network find each other by name (issue 15), and each member may
see only the names of the networks it belongs to. The runtime (fed by the networks code)
gives the Stack one *view* per querier address, {name -> addresses}, and the set of network
names (`domains`). A DNS query to the forwarder from a querier whose view holds the name is
answered here: A records for its IPv4 addresses, AAAA for its IPv6 ones, NOERROR without
records for any other type. A query for `X.D`, D a network name, that the querier's view does
not hold gets NXDOMAIN here, so the names of a network never leak upstream from outside it.
Everything else returns None: the caller forwards it upstream as before. Views are replaced
whole (`replace`), validated first (a bad value raises ValueError naming it, and changes
nothing), and bounded: MAX_VIEWS queriers, MAX_NAMES names each, MAX_ADDRESSES per name.
Pure: the handlers (iface/udp.py, and the runtime's TCP side) send what `answer` returns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from .errors import MalformedPacket
from .wire.dns import (CLASS_IN, OPCODE_QUERY, RCODE_NOERROR, RCODE_NXDOMAIN, TYPE_A, TYPE_AAAA,
                       UDP_MAX, build_answer, parse_query)

MAX_VIEWS = 4096
MAX_NAMES = 256             # per view
MAX_ADDRESSES = 16          # per name (several members may share an alias)
MAX_DOMAINS = 4096
TTL = 5                     # seconds: members come and go; resolvers should ask again soon
DROP = b""                  # `answer`'s verdict for a malformed query: dropped, counted

Entry = tuple[tuple[bytes, ...], tuple[bytes, ...]]     # IPv4 addresses, IPv6 addresses


def _address(value: object, where: str) -> bytes:
    if isinstance(value, bytes) and len(value) in (4, 16):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value).packed
        except ValueError:
            pass
    raise ValueError(f"{where}: {value!r} is not an IP address")


def _name(value: object, where: str) -> str:
    """A name as views hold it: lower case, no trailing dot, labels of 1..63 octets."""
    if isinstance(value, str):
        name = value.lower().rstrip(".")
        labels = name.split(".")
        if (name and len(name) < 254 and all(0 < len(x) < 64 for x in labels) and name.isascii()
                and "\\" not in name):
            return name
    raise ValueError(f"{where}: {value!r} is not a DNS name")


def _view(names: object, where: str) -> dict[str, Entry]:
    if not isinstance(names, Mapping):
        raise ValueError(f"{where}: not an object of name -> [addresses]")
    if len(names) > MAX_NAMES:
        raise ValueError(f"{where}: more than {MAX_NAMES} names")
    view: dict[str, Entry] = {}
    for name, addrs in names.items():
        n = _name(name, f"{where}.{name}")
        if not isinstance(addrs, (list, tuple)) or len(addrs) > MAX_ADDRESSES:
            raise ValueError(f"{where}.{name}: not a list of at most {MAX_ADDRESSES} addresses")
        packed = [_address(a, f"{where}.{name}") for a in addrs]
        view[n] = (tuple(a for a in packed if len(a) == 4), tuple(a for a in packed if len(a) == 16))
    return view


class NameViews:
    """Per-querier name views and the network names; `answer` decides for one query."""

    __slots__ = ("views", "domains", "active", "_counters")

    def __init__(self, counters: dict[str, int]) -> None:
        self._counters = counters
        self.views: dict[bytes, dict[str, Entry]] = {}
        self.domains: frozenset[str] = frozenset()
        self.active = False                 # any view or domain: DNS queries are looked at

    def replace(self, views: Mapping[object, object], domains: Iterable[object]) -> None:
        """Replace every view and the network names (querier: packed or text address)."""
        if not isinstance(views, Mapping) or len(views) > MAX_VIEWS:
            raise ValueError(f"views: not an object of at most {MAX_VIEWS} querier addresses")
        new: dict[bytes, dict[str, Entry]] = {}
        for querier, names in views.items():
            where = f"views.{querier}"
            new[_address(querier, where)] = _view(names, where)
        doms = list(domains)
        if len(doms) > MAX_DOMAINS:
            raise ValueError(f"domains: more than {MAX_DOMAINS} names")
        new_domains = frozenset(_name(d, "domains") for d in doms)
        self.views, self.domains = new, new_domains
        self.active = bool(new or new_domains)

    def answer(self, querier: bytes, msg: bytes | memoryview, limit: int = UDP_MAX) -> bytes | None:
        """The answer to query `msg` from `querier` (packed), DROP for a malformed one
        (counted `dns.rx.drop.*`), or None: not a local name, forward it upstream."""
        c = self._counters
        try:
            q = parse_query(msg)
        except MalformedPacket as e:
            c[e.reason.replace("dns.", "dns.rx.drop.", 1)] += 1
            return DROP
        if q.opcode != OPCODE_QUERY or q.qclass != CLASS_IN:
            return None
        name = q.name
        view = self.views.get(querier)
        entry = None if view is None else view.get(name)
        if entry is not None:
            c["dns.names.answered"] += 1
            addrs = entry[0] if q.qtype == TYPE_A else entry[1] if q.qtype == TYPE_AAAA else ()
            return build_answer(msg, q, RCODE_NOERROR, addrs, TTL, limit)
        if self._in_domain(name):
            c["dns.names.nxdomain"] += 1
            return build_answer(msg, q, RCODE_NXDOMAIN, (), TTL, limit)
        return None

    def _in_domain(self, name: str) -> bool:
        """Whether `name` is X.D for a network name D (X not empty)."""
        domains = self.domains
        if not domains:
            return False
        i = name.find(".")
        while i != -1:
            if name[i + 1:] in domains:
                return True
            i = name.find(".", i + 1)
        return False
