"""Every forwarding and NAT decision of the stack, in one place.

Two questions are answered here and nowhere else:

* a guest opens a flow (TCP SYN, first UDP datagram, first echo request) to `dst`:`dport`:
  where does it really go on the host side (`Verdict.host`: the destination itself,
  127.0.0.1 for the gateway address, `DNS_UPSTREAM` for the DNS address) or, if it may not,
  why not (`Verdict.why`, the drop counter's last part) and what the guest gets back
  (`Verdict.reply`: a RST, ICMP port unreachable, or nothing);
* a host client reaches a published port: which source address the guest sees it come from
  (`Forwarder.inbound_source`: its own, or the gateway's when the guest could not route back).

It also maps a host socket's errno to what the guest is told (`connect_failure`,
`datagram_unreach_code`, `echo_unreach_code`): the one errno -> ICMP table.

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
from .addr import is_martian, ntoa, parse_client_address
from .wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

# errno values are Linux's; the pure core names them itself instead of importing errno's table
# through os. (They are stable ABI.)
EPERM = 1
ENOMEM = 12
EACCES = 13
ENFILE = 23
EMFILE = 24
EADDRNOTAVAIL = 99
ENETUNREACH = 101
ENOBUFS = 105
ETIMEDOUT = 110
ECONNREFUSED = 111
EHOSTUNREACH = 113
# Shortages on our side, not facts about the destination: the guest must not be told the
# host is unreachable. Its SYN is dropped as a server with a full SYN queue would, and the
# guest's retransmission is a fresh attempt.
LOCAL_RESOURCE_ERRORS = frozenset((EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL))

# The one errno -> ICMP destination-unreachable table. Each caller uses the part that is a
# fact about its kind of flow (see the functions below).
_ERRNO_UNREACH = {
    ECONNREFUSED: _icmp.UNREACH_PORT,
    ENETUNREACH: _icmp.UNREACH_NET,
    EHOSTUNREACH: _icmp.UNREACH_HOST,
    EACCES: _icmp.UNREACH_ADMIN,
    EPERM: _icmp.UNREACH_ADMIN,
}
_DATAGRAM_ERRNOS = frozenset((ECONNREFUSED, ENETUNREACH, EHOSTUNREACH))
_ECHO_ERRNOS = frozenset((ENETUNREACH, EHOSTUNREACH))

DNS_PORT = 53
DNS_UPSTREAM = ""               # Verdict.host of a DNS flow: the runtime picks the upstream
HOST_LOOPBACK = "127.0.0.1"     # where the gateway address leads (with allow_host_loopback)
INBOUND_SRC_CACHE = 1024        # client addresses whose inbound source is remembered
REMAP_TRIES = 32                # gateway ports tried when a client's own port is taken

# What the guest gets back for a refused flow.
REPLY_NONE = 0                  # silently dropped
REPLY_RST = 1                   # TCP reset (RFC 9293 §3.10.7.1)
REPLY_PORT_UNREACH = 2          # ICMP destination unreachable, port


def connect_failure(err: int) -> int | None:
    """A host TCP connect failed with `err`: the ICMP unreachable code to quote the guest's SYN
    with, or None when the guest gets no answer (refused: RST instead; a local shortage: drop).
    """
    if err == ECONNREFUSED or err in LOCAL_RESOURCE_ERRORS:
        return None
    return _ERRNO_UNREACH.get(err, _icmp.UNREACH_HOST)


def datagram_unreach_code(err: int) -> int | None:
    """A UDP flow's host socket reported `err`: the ICMP unreachable code for the guest, or None."""
    return _ERRNO_UNREACH[err] if err in _DATAGRAM_ERRNOS else None


def echo_unreach_code(err: int) -> int | None:
    """An echo flow's host socket could not be opened with `err`: the unreachable code, or None."""
    return _ERRNO_UNREACH[err] if err in _ECHO_ERRNOS else None


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


_DNS = Verdict(DNS_UPSTREAM, dns=True)
_LOOPBACK = Verdict(HOST_LOOPBACK)


class Forwarder:
    """The forwarding decisions for one Stack's network (see the module docstring)."""

    def __init__(self, config: Any, counters: dict[str, int], rng: random.Random) -> None:
        self._counters = counters
        self._rng = rng
        self.guest_ip: bytes = config.guest.packed
        net = config.network
        self._net_lo = int(net.network_address)
        self._net_mask = int(net.netmask)
        self.gateway_ip: bytes = config.gateway.packed
        self.dns_ip: bytes = config.dns.packed
        self._dns_enabled: bool = config.dns_enabled
        self._allow_loopback: bool = config.allow_host_loopback
        self.rules: list[Rule] = []          # the policy hook: empty until networks fill it
        self._inbound_src: dict[str, bytes] = {}

    def in_network(self, ip: bytes) -> bool:
        """Whether `ip` is inside the sandbox network (the guest's own link)."""
        return (int.from_bytes(ip, "big") & self._net_mask) == self._net_lo

    def outbound(self, proto: int, src: bytes, dst: bytes, dport: int) -> Verdict:
        """The decision for a new guest flow of `proto` (PROTO_TCP/UDP/ICMP) to dst:dport."""
        for rule in self.rules:
            verdict = rule(proto, src, dst, dport)
            if verdict is not None:
                return verdict
        if dport == DNS_PORT and dst == self.dns_ip and proto != PROTO_ICMP:
            if self._dns_enabled:
                return _DNS
            if proto == PROTO_UDP:
                return Verdict(None, "dns_disabled", REPLY_PORT_UNREACH)
        why = self._refusal(dst)
        if why is None:
            return _LOOPBACK if dst == self.gateway_ip else Verdict(ntoa(dst))
        if proto == PROTO_TCP:
            reply = REPLY_RST
        elif proto == PROTO_UDP and (dst == self.gateway_ip or dst == self.dns_ip):
            reply = REPLY_PORT_UNREACH
        else:
            reply = REPLY_NONE
        return Verdict(None, why, reply)

    def _refusal(self, dst: bytes) -> str | None:
        """Why a flow to `dst` may not be proxied, or None. Host loopback is never reachable
        except through the gateway address with allow_host_loopback."""
        if dst == self.gateway_ip:
            return None if self._allow_loopback else "host_loopback_denied"
        if self.in_network(dst):
            return "local_network"          # .3 other than DNS, the guest itself, others
        if is_martian(dst):
            return "martian_dst"            # loopback, "this network", multicast, reserved/broadcast
        return None

    def inbound_source(self, client_ip: str) -> bytes:
        """The address the guest sees for a host client at `client_ip`: the client's own when
        the guest can route back to it through the gateway, else the gateway's. Remembered
        per address string (clients come from few addresses; parsing one costs a few us)."""
        cache = self._inbound_src
        src = cache.get(client_ip)
        if src is None:
            if len(cache) >= INBOUND_SRC_CACHE:
                cache.clear()
            src = cache[client_ip] = self._inbound_source(client_ip)
        return src

    def _inbound_source(self, client_ip: str) -> bytes:
        packed = parse_client_address(client_ip)
        if packed is None or is_martian(packed) or self.in_network(packed):
            return self.gateway_ip
        return packed


    def inbound_key(self, client_ip: str, client_port: int, guest_port: int,
                    table: dict[Any, Any], proto: str,
                    free: Callable[[Any], bool] | None = None) -> tuple[bytes, int, bytes, int] | None:
        """The guest-side 4-tuple (guest ip, guest port, source, source port) a published
        port's client appears as: its own address and port, or the gateway's address with its
        own port or, when that tuple is taken, a random one. A taken tuple is freed when
        `free(flow)` says so (TCP: a flow in TIME-WAIT). None when none is free (counted)."""
        c = self._counters
        src = self.inbound_source(client_ip)
        mapped = src == self.gateway_ip
        if mapped:
            c[proto + ".inbound.via_gateway"] += 1
        sport = client_port
        for _ in range(REMAP_TRIES):
            key = (self.guest_ip, guest_port, src, sport)
            old = table.get(key)
            if old is None or (free is not None and free(old)):
                return key
            if not mapped:
                break
            sport = 1024 + self._rng.randrange(65536 - 1024)
            c[proto + ".inbound.port_remapped"] += 1
        c[proto + ".inbound.drop.tuple_in_use"] += 1
        return None
