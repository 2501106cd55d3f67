"""Every forwarding and NAT decision of the stack, in one place, for both IP families.

Two questions are answered here and nowhere else:

* a guest opens a flow (TCP SYN, first UDP datagram, first echo request) to `dst`:`dport`:
  where does it really go on the host side (`Verdict.host`: the destination itself as text,
  127.0.0.1 or ::1 for the gateway address, `DNS_UPSTREAM` for the DNS address) or, if it may
  not, why not (`Verdict.why`, the drop counter's last part) and what the guest gets back
  (`Verdict.reply`: a RST, ICMP(v6) port unreachable, ICMP net unreachable (ICMPv6 no route),
  or nothing; REPLY_DHCP: not a flow but a request for the DHCP server, UDP port 67 at the
  gateway or a broadcast address). The gateway without host loopback is "network unreachable"
  for TCP and UDP, as libslirp's (slirp4netns --disable-host-loopback): the client sees
  ENETUNREACH;
* a host client reaches a published port: which guest address it reaches (`inbound_guest`:
  the family follows the client's, unless the runtime names the guest address) and which
  source address the guest sees it come from (`inbound_source`: its own, or that family's
  gateway when the guest could not route back to it).

The same rules serve IPv4 and IPv6: each family has its `_Side` (the sandbox network and its
virtual hosts), picked by the address length once per flow.

It also maps a host socket's errno to what the guest is told (`connect_failure`,
`datagram_unreach_code`, `echo_unreach_code`): the one errno -> unreachability table. An errno
maps to a *kind* (network, host, administratively prohibited, port); each ICMP flavour has its
own code for a kind (ICMPv4 net/host/admin/port, ICMPv6 no-route/address/admin/port).

Routed prefixes (routes.py, `Forwarder.routed`: the subnets behind the guest, issue 15): a
guest flow *to* one of them is refused (`routed_dst`: the router behind the guest should have
delivered it itself; proxying it to a host socket would send it to whatever that address
means on the host), and a published port's client inside one appears as the gateway, as a
client inside the sandbox network does. Their sources are accepted by the IP inputs; the
inbound side takes a `guest_ip` inside them like the guest's own.

Policy hook: `Forwarder.rules` is an ordered list of `Rule`s evaluated before the built-in
decisions, like Docker's DOCKER-USER chain; the first rule that returns a `Verdict` decides.
It is empty today (the networks issue fills it). Decisions are made once per flow, never per
packet, so the hook costs nothing on the data path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .wire import icmp as _icmp
from .wire import icmpv6 as _icmpv6
from .addr import V6_LEN, is_martian, ntoa, parse_client_address
from .routes import Network, Pairs, contains, pairs
from .wire.ipv4 import PROTO_TCP, PROTO_UDP

# errno values are Linux's; the pure core names them itself instead of importing errno's table
# through os. (They are stable ABI.)
EPERM = 1
ENOMEM = 12
EACCES = 13
ENFILE = 23
EMFILE = 24
EAFNOSUPPORT = 97
EADDRNOTAVAIL = 99
ENETUNREACH = 101
ENOBUFS = 105
ETIMEDOUT = 110
ECONNREFUSED = 111
EHOSTUNREACH = 113
# Shortages on our side, not facts about the destination: the guest must not be told the
# host is unreachable. Its SYN is dropped as a server with a full SYN queue would, and the
# guest's retransmission is a fresh attempt. (EADDRNOTAVAIL for an IPv6 destination is the
# exception: a host without any IPv6 address says so; see _errno_kind.)
LOCAL_RESOURCE_ERRORS = frozenset((EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL))

# Kinds of unreachability: facts about a destination, which each ICMP flavour codes its way.
KIND_NET = "net"                # no route to the network (or no IPv6 on the host at all)
KIND_HOST = "host"              # the host does not answer
KIND_ADMIN = "admin"            # a firewall said no
KIND_PORT = "port"              # nothing listens there

# The one errno -> kind table. Each caller uses the part that is a fact about its kind of flow
# (see the functions below).
_ERRNO_KIND = {
    ECONNREFUSED: KIND_PORT,
    ENETUNREACH: KIND_NET,
    EAFNOSUPPORT: KIND_NET,         # this host has no IPv6 (socket() refused the family)
    EHOSTUNREACH: KIND_HOST,
    EACCES: KIND_ADMIN,
    EPERM: KIND_ADMIN,
}
_V4_CODES = {KIND_NET: _icmp.UNREACH_NET, KIND_HOST: _icmp.UNREACH_HOST,
             KIND_ADMIN: _icmp.UNREACH_ADMIN, KIND_PORT: _icmp.UNREACH_PORT}
_V6_CODES = {KIND_NET: _icmpv6.UNREACH_NO_ROUTE, KIND_HOST: _icmpv6.UNREACH_ADDR,
             KIND_ADMIN: _icmpv6.UNREACH_ADMIN, KIND_PORT: _icmpv6.UNREACH_PORT}
_DATAGRAM_ERRNOS = frozenset((ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EAFNOSUPPORT))
_ECHO_ERRNOS = frozenset((ENETUNREACH, EHOSTUNREACH, EAFNOSUPPORT))

DNS_PORT = 53
DNS_UPSTREAM = ""               # Verdict.host of a DNS flow: the runtime picks the upstream
HOST_LOOPBACK = "127.0.0.1"     # where the gateway address leads (with allow_host_loopback)
HOST_LOOPBACK6 = "::1"          # where the IPv6 gateway address leads (likewise)
INBOUND_SRC_CACHE = 1024        # client addresses whose inbound source is remembered
REMAP_TRIES = 32                # gateway ports tried when a client's own port is taken

# What the guest gets back for a refused flow.
REPLY_NONE = 0                  # silently dropped
REPLY_RST = 1                   # TCP reset (RFC 9293 §3.10.7.1)
REPLY_PORT_UNREACH = 2          # ICMP(v6) destination unreachable, port
REPLY_NET_UNREACH = 3           # ICMP net unreachable / ICMPv6 no route, from the gateway
REPLY_DHCP = 4                  # not a flow: a DHCP request for the server at the gateway
DHCP_SERVER_PORT = 67
BROADCAST4 = b"\xff\xff\xff\xff"


def _errno_kind(err: int, v6: bool) -> str | None:
    """The kind of unreachability `err` states, or None for a shortage on our side."""
    if err in LOCAL_RESOURCE_ERRORS:
        # An IPv6 socket that cannot get a source address: the host has no IPv6 to speak of.
        return KIND_NET if v6 and err == EADDRNOTAVAIL else None
    return _ERRNO_KIND.get(err, KIND_HOST)


def _code(kind: str, v6: bool) -> int:
    return (_V6_CODES if v6 else _V4_CODES)[kind]


def connect_failure(err: int, v6: bool = False) -> int | None:
    """A host TCP connect failed with `err`: the ICMP (`v6`: ICMPv6) destination-unreachable
    code to quote the guest's SYN with, or None when the guest gets no ICMP (refused: RST
    instead; a local shortage: its SYN is dropped)."""
    if err == ECONNREFUSED:
        return None
    kind = _errno_kind(err, v6)
    return None if kind is None else _code(kind, v6)


def datagram_unreach_code(err: int, v6: bool = False) -> int | None:
    """A UDP flow's host socket reported `err`: the unreachable code for the guest, or None."""
    if err in _DATAGRAM_ERRNOS or (v6 and err == EADDRNOTAVAIL):
        kind = _errno_kind(err, v6)
        return None if kind is None else _code(kind, v6)
    return None


def echo_unreach_code(err: int, v6: bool = False) -> int | None:
    """An echo flow's host socket could not be opened with `err`: the unreachable code, or None."""
    if err in _ECHO_ERRNOS or (v6 and err == EADDRNOTAVAIL):
        kind = _errno_kind(err, v6)
        return None if kind is None else _code(kind, v6)
    return None


def ports_valid(a: int, b: int) -> bool:
    """Both ports usable for a flow (1..65535): port 0 is never a real endpoint."""
    return 0 < a < 65536 and 0 < b < 65536


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where a guest flow goes: `host` (a host address string, or DNS_UPSTREAM), or, when
    `host` is None, refused: counted as `<proto>.rx.drop.<why>`, answered with `reply`."""
    host: str | None
    why: str = ""
    reply: int = REPLY_NONE
    dns: bool = False


class Rule(Protocol):
    """One policy rule: a Verdict for a new guest flow, or None to let the next rule decide."""

    def __call__(self, proto: int, src: bytes, dst: bytes, dport: int) -> Verdict | None: ...


def net_unreach_code(v6: bool) -> int:
    """The destination-unreachable code for "network unreachable" in a flavour (REPLY_NET_UNREACH)."""
    return _code(KIND_NET, v6)


def echo_unreach(err: int, v6: bool = False) -> tuple[int, int] | None:
    """`echo_unreach_code` as the (type, code) of the error for the guest, in its flow's
    ICMP flavour (`v6`: ICMPv6, whose destination-unreachable type is 1, not 3)."""
    code = echo_unreach_code(err, v6)
    if code is None:
        return None
    return (_icmpv6.DEST_UNREACH if v6 else _icmp.DEST_UNREACH), code


_DNS = Verdict(DNS_UPSTREAM, dns=True)
_DHCP = Verdict(None, "dhcp", REPLY_DHCP)


@dataclass(frozen=True, slots=True)
class _Side:
    """One family's sandbox network as the forwarding rules see it: its virtual hosts, the
    guest's address, the prefix, and where the gateway address leads."""
    gateway: bytes
    dns: bytes
    guest: bytes
    lo: int
    mask: int
    loopback: Verdict

    def __contains__(self, ip: bytes) -> bool:
        return len(ip) == len(self.gateway) and (int.from_bytes(ip, "big") & self.mask) == self.lo


def _side(net: Any, gateway: Any, dns: Any, guest: Any, loopback: str) -> _Side:
    return _Side(gateway.packed, dns.packed, guest.packed, int(net.network_address),
                 int(net.netmask), Verdict(loopback))


class Forwarder:
    """The forwarding decisions for one Stack's network (see the module docstring)."""

    def __init__(self, config: Any, counters: dict[str, int], rng: random.Random) -> None:
        self._counters = counters
        self._rng = rng
        v4 = _side(config.network, config.gateway, config.dns, config.guest, HOST_LOOPBACK)
        self._v4 = v4
        self._sides: dict[int, _Side] = {4: v4}
        if config.network6 is not None:
            self._sides[V6_LEN] = _side(config.network6, config.gateway6, config.dns6,
                                        config.guest6, HOST_LOOPBACK6)
        self.guest_ip: bytes = v4.guest
        self.gateway_ip: bytes = v4.gateway
        self.dns_ip: bytes = v4.dns
        self._dns_enabled: bool = config.dns_enabled
        self._allow_loopback: bool = config.allow_host_loopback
        # Where a DHCP client sends (port 67): the gateway, the limited and the network broadcast.
        self._dhcp_dsts = frozenset((v4.gateway, BROADCAST4, config.network.broadcast_address.packed))
        self.rules: list[Rule] = []          # the policy hook: empty until networks fill it
        self.routed: dict[int, Pairs] = {}   # routed prefixes by address length (Stack.set_routed)
        # client address string -> (its packed address or None, source per guest family)
        self._inbound_src: dict[str, tuple[bytes | None, dict[int, bytes]]] = {}

    def in_network(self, ip: bytes) -> bool:
        """Whether `ip` is inside the sandbox network of its family (the guest's own link)."""
        side = self._sides.get(len(ip))
        return side is not None and ip in side

    def outbound(self, proto: int, src: bytes, dst: bytes, dport: int) -> Verdict:
        """The decision for a new guest flow of `proto` (PROTO_TCP/UDP, or ICMP/ICMPv6 for an
        echo flow) to dst:dport, for a destination of either family."""
        for rule in self.rules:
            verdict = rule(proto, src, dst, dport)
            if verdict is not None:
                return verdict
        side = self._sides.get(len(dst))
        if side is None:
            return Verdict(None, "martian_dst")      # a family this stack does not serve
        if dport == DHCP_SERVER_PORT and proto == PROTO_UDP and dst in self._dhcp_dsts:
            return _DHCP
        if dport == DNS_PORT and dst == side.dns and (proto == PROTO_TCP or proto == PROTO_UDP):
            if self._dns_enabled:
                return _DNS
            if proto == PROTO_UDP:
                return Verdict(None, "dns_disabled", REPLY_PORT_UNREACH)
        why = self._refusal(dst, side)
        if why is None:
            return side.loopback if dst == side.gateway else Verdict(ntoa(dst))
        if why == "host_loopback_denied":
            reply = REPLY_NET_UNREACH       # libslirp: the host side "has no route" there
        elif proto == PROTO_TCP:
            reply = REPLY_RST
        elif proto == PROTO_UDP and (dst == side.gateway or dst == side.dns):
            reply = REPLY_PORT_UNREACH
        else:
            reply = REPLY_NONE
        return Verdict(None, why, reply)

    def _refusal(self, dst: bytes, side: _Side) -> str | None:
        """Why a flow to `dst` may not be proxied, or None. Host loopback is never reachable
        except through the gateway address with allow_host_loopback."""
        if dst == side.gateway:
            return None if self._allow_loopback else "host_loopback_denied"
        if dst in side:
            return "local_network"          # DNS address other than DNS, the guest itself, others
        if self.routes_to(dst):
            return "routed_dst"
        if is_martian(dst):
            return "martian_dst"            # loopback, unspecified, multicast, link-local, ...
        return None

    def set_routed(self, networks: tuple[Network, ...]) -> None:
        """Replace the routed prefixes (validated by routes.parse_prefixes)."""
        self.routed = {4: pairs(networks, 4), V6_LEN: pairs(networks, 6)}
        self._inbound_src.clear()           # a client's inbound source may have changed

    def unroutable_guest(self, guest_ip: bytes) -> bool:
        """An inbound flow's named guest address that is neither on the sandbox network nor
        in a routed prefix (one removed since the forward was made, say): nothing to reach."""
        side = self._sides.get(len(guest_ip))
        return side is not None and guest_ip not in side and not self.routes_to(guest_ip)

    def routes_to(self, ip: bytes) -> bool:
        """Whether `ip` is inside one of the routed prefixes (the subnets behind the guest)."""
        routed = self.routed.get(len(ip))
        return routed is not None and contains(routed, ip)

    # ------------------------------------------------------------------ inbound

    def inbound_guest(self, client_ip: str, guest_ip: bytes | None = None) -> bytes | None:
        """The guest address a published port's client reaches: `guest_ip` when the runtime
        names one (None if its family is off), else the guest's address in the client's
        family: IPv6 for an IPv6 client (not IPv4-mapped) when IPv6 is on, IPv4 otherwise."""
        if guest_ip is not None:
            return guest_ip if len(guest_ip) in self._sides else None
        packed = self._client(client_ip)[0]
        if packed is not None:
            side = self._sides.get(len(packed))
            if side is not None:
                return side.guest
        return self._v4.guest

    def inbound_source(self, client_ip: str, guest_ip: bytes | None = None) -> bytes:
        """The address the guest (at `guest_ip`, by default its IPv4 address) sees for a host
        client at `client_ip`: the client's own when it is of the guest's family and the guest
        can route back to it through the gateway, else that family's gateway. Remembered per
        address string (clients come from few addresses; parsing one costs a few us)."""
        n = 4 if guest_ip is None else len(guest_ip)
        packed, sources = self._client(client_ip)
        src = sources.get(n)
        if src is None:
            side = self._sides.get(n, self._v4)
            if (packed is None or len(packed) != n or is_martian(packed) or packed in side
                    or self.routes_to(packed)):
                src = side.gateway
            else:
                src = packed
            sources[n] = src
        return src

    def _client(self, client_ip: str) -> tuple[bytes | None, dict[int, bytes]]:
        cache = self._inbound_src
        entry = cache.get(client_ip)
        if entry is None:
            if len(cache) >= INBOUND_SRC_CACHE:
                cache.clear()
            entry = cache[client_ip] = (parse_client_address(client_ip), {})
        return entry

    def inbound_key(self, client_ip: str, client_port: int, guest_port: int,
                    table: dict[Any, Any], proto: str,
                    free: Callable[[Any], bool] | None = None,
                    guest_ip: bytes | None = None) -> tuple[bytes, int, bytes, int] | None:
        """The guest-side 4-tuple (guest ip, guest port, source, source port) a published
        port's client appears as, for the guest at `guest_ip` (by default its IPv4 address):
        its own address and port, or the gateway's address with its own port or, when that
        tuple is taken, a random one. A taken tuple is freed when `free(flow)` says so (TCP: a
        flow in TIME-WAIT). None when none is free (counted)."""
        c = self._counters
        guest = self._v4.guest if guest_ip is None else guest_ip
        src = self.inbound_source(client_ip, guest)
        mapped = src == self._sides[len(guest)].gateway
        if mapped:
            c[proto + ".inbound.via_gateway"] += 1
        sport = client_port
        for _ in range(REMAP_TRIES):
            key = (guest, guest_port, src, sport)
            old = table.get(key)
            if old is None or (free is not None and free(old)):
                return key
            if not mapped:
                break
            sport = 1024 + self._rng.randrange(65536 - 1024)
            c[proto + ".inbound.port_remapped"] += 1
        c[proto + ".inbound.drop.tuple_in_use"] += 1
        return None
