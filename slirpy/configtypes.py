"""config.py's values: NetConfig, its Limits, PortSpec and AutoPublish, read-only once made.

Import them from slirpy.config, which re-exports them (and the defaults below) beside their
parsers.  Plain slotted classes, not frozen dataclasses (issue 18): `slirpy run` builds a
NetConfig on its way to its command's start, where the `dataclasses` module's import and the
methods it generates and compiles for each class cost ~2-3 ms.  They behave as the frozen
dataclasses did: built by keyword or by position in field order, with the same defaults;
equal (and hashed) by their fields, between objects of one class; a repr naming every field;
AttributeError on setting or deleting a field.  `__slots__` is the field names in order
(dataclasses.fields'), `replace(**changes)` is dataclasses.replace.
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False   # typing's, without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Self

DEFAULT_MTU = 65520
DEFAULT_CIDR = "10.0.2.0/24"
DEFAULT_CIDR6 = "fd00::/64"   # slirp4netns's IPv6 network: gateway ::2, DNS ::3, guest ::100
PORT_PROTOS = ("tcp", "udp")
DEFAULT_AUTO_ADDR = "127.0.0.1"       # --publish-auto-addr: loopback only, unless asked


class _Value:
    """Equality, hash, repr, `replace` and read-only fields for a class whose `__slots__` are its
    fields.  Its `__init__` sets them with object.__setattr__ (past our own, which refuses)."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple([getattr(self, name) for name in self.__slots__])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Value) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self.__class__.__name__} is read-only (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self.__class__.__name__} is read-only (cannot delete {name})")

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return self.__class__, self._fields()      # copy, deepcopy and pickle: by __init__

    def replace(self, **changes: Any) -> Self:
        """A new object with the fields of `changes` set (dataclasses.replace); TypeError (from
        __init__) for a name that is not a field."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return self.__class__(**values)


class Limits(_Value):
    """Every bound the stack enforces. Defaults suit a laptop; `--limit NAME=VALUE` sets any."""

    __slots__ = ("max_tcp_flows", "max_half_open", "max_neighbours", "tcp_rcv_buf", "tcp_rcv_buf_total",
                 "tcp_snd_buf", "tcp_snd_buf_total", "tcp_time_wait", "tcp_syn_timeout", "tcp_ack_delay",
                 "max_udp_flows", "udp_timeout", "udp_timeout_replied", "dns_timeout", "max_icmp_flows",
                 "icmp_timeout", "tcp_inbound_timeout", "max_time_wait")
    max_tcp_flows: int                 # TCP flows with a host socket (TIME-WAIT ones have none)
    max_half_open: int                 # guest SYNs waiting for the host connect
    max_neighbours: int                # ARP table entries
    tcp_rcv_buf: int                   # bytes: window we advertise (guest -> host in flight)
    # ... over all flows: the flows bringing data share it equally (128 KiB at least,
    # tcp_rcv_buf at most). 16 MiB: one stream keeps 4 MiB, 100 upload streams get 164 KiB
    # each, which moved 11 % more than 4 MiB each did (3 A/B pairs; shallower queues, warmer
    # copies).
    tcp_rcv_buf_total: int
    tcp_snd_buf: int                   # bytes buffered host -> guest before host reads pause
    # ... over all flows: each flow with data queued gets an equal share (64 KiB at least,
    # tcp_snd_buf at most), and host reads stop at the total, so many busy flows do not each
    # hold tcp_snd_buf. 16 MiB: at 100 host->sandbox streams 64 MiB moved no more data, but
    # queued 2.3x its size in cold memory and made the host retransmit 4-5x as often.
    tcp_snd_buf_total: int
    tcp_time_wait: float               # seconds
    tcp_syn_timeout: float             # give up on a guest that never finishes the handshake
    tcp_ack_delay: float               # seconds an in-order small segment's ACK waits for data; 0: none
    max_udp_flows: int                 # UDP flows (one host socket each); oldest idle evicted
    udp_timeout: float                 # seconds idle before a UDP flow without a reply expires
    udp_timeout_replied: float         # ... once the host side has answered at least once
    dns_timeout: float                 # idle expiry of a UDP flow to the DNS forwarder
    max_icmp_flows: int                # ICMP echo flows (guest ident, destination)
    icmp_timeout: float                # seconds idle before an echo flow expires
    tcp_inbound_timeout: float         # a published-port SYN the guest never answers: give up
    # TCP flows in TIME-WAIT (their host socket is closed already): past it the oldest is let
    # go early. 16384 keeps the whole tcp_time_wait for up to 8192 closes a second.
    max_time_wait: int

    def __init__(self, max_tcp_flows: int = 65536, max_half_open: int = 1024, max_neighbours: int = 256,
                 tcp_rcv_buf: int = 4 << 20, tcp_rcv_buf_total: int = 16 << 20, tcp_snd_buf: int = 4 << 20,
                 tcp_snd_buf_total: int = 16 << 20, tcp_time_wait: float = 2.0,
                 tcp_syn_timeout: float = 75.0, tcp_ack_delay: float = 0.001, max_udp_flows: int = 4096,
                 udp_timeout: float = 30.0, udp_timeout_replied: float = 180.0, dns_timeout: float = 10.0,
                 max_icmp_flows: int = 256, icmp_timeout: float = 30.0,
                 tcp_inbound_timeout: float = 20.0, max_time_wait: int = 16384) -> None:
        init = object.__setattr__
        init(self, "max_tcp_flows", max_tcp_flows)
        init(self, "max_half_open", max_half_open)
        init(self, "max_neighbours", max_neighbours)
        init(self, "tcp_rcv_buf", tcp_rcv_buf)
        init(self, "tcp_rcv_buf_total", tcp_rcv_buf_total)
        init(self, "tcp_snd_buf", tcp_snd_buf)
        init(self, "tcp_snd_buf_total", tcp_snd_buf_total)
        init(self, "tcp_time_wait", tcp_time_wait)
        init(self, "tcp_syn_timeout", tcp_syn_timeout)
        init(self, "tcp_ack_delay", tcp_ack_delay)
        init(self, "max_udp_flows", max_udp_flows)
        init(self, "udp_timeout", udp_timeout)
        init(self, "udp_timeout_replied", udp_timeout_replied)
        init(self, "dns_timeout", dns_timeout)
        init(self, "max_icmp_flows", max_icmp_flows)
        init(self, "icmp_timeout", icmp_timeout)
        init(self, "tcp_inbound_timeout", tcp_inbound_timeout)
        init(self, "max_time_wait", max_time_wait)


# NetConfig's defaults: one object each, shared (all three are immutable; the dataclass made a
# new one per NetConfig).
_NETWORK = ipaddress.IPv4Network(DEFAULT_CIDR)
_NETWORK6 = ipaddress.IPv6Network(DEFAULT_CIDR6)
_LIMITS = Limits()


def _mac_for(ip: ipaddress.IPv4Address) -> bytes:
    # libslirp's layout for its virtual hosts: 52:55 followed by the IPv4 address.
    return b"\x52\x55" + ip.packed


class NetConfig(_Value):
    """A sandbox network's settings: addresses, MTU, DNS, limits (slirp4netns's by default)."""

    __slots__ = ("network", "mtu", "offload", "allow_host_loopback", "guest_mac", "limits", "dns_enabled",
                 "dns_upstream", "resolv_conf", "outbound_addr", "network6", "outbound_addr6", "routed",
                 "ports", "auto_publish")
    network: ipaddress.IPv4Network
    mtu: int
    offload: bool                         # IFF_VNET_HDR + TSO/CSUM offloads on the TAP
    allow_host_loopback: bool             # gateway address reaches host 127.0.0.1
    guest_mac: bytes | None               # tap0's MAC; None lets the kernel pick one
    limits: Limits
    dns_enabled: bool                     # forward DNS at network+3 (UDP and TCP port 53)
    dns_upstream: tuple[str, int] | None  # override the host's resolv.conf nameservers
    resolv_conf: str                      # the host file the upstreams and search lines come from
    outbound_addr: str | None             # bind outbound host sockets to this IPv4 address
    # IPv6 network of the sandbox (gateway ::2, DNS ::3, guest ::100); None: IPv6 off
    network6: ipaddress.IPv6Network | None
    outbound_addr6: str | None            # bind outbound IPv6 host sockets to this address
    # subnets behind the guest that the stack routes for (issue 15; tcpip/routes.py)
    routed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ports: tuple[PortSpec, ...]           # published ports (-p), in command-line order
    auto_publish: AutoPublish | None      # -p auto[/tcp|/udp]; None: off

    def __init__(self, network: ipaddress.IPv4Network = _NETWORK, mtu: int = DEFAULT_MTU,
                 offload: bool = True, allow_host_loopback: bool = False, guest_mac: bytes | None = None,
                 limits: Limits = _LIMITS, dns_enabled: bool = True,
                 dns_upstream: tuple[str, int] | None = None, resolv_conf: str = "/etc/resolv.conf",
                 outbound_addr: str | None = None, network6: ipaddress.IPv6Network | None = _NETWORK6,
                 outbound_addr6: str | None = None,
                 routed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
                 ports: tuple[PortSpec, ...] = (), auto_publish: AutoPublish | None = None) -> None:
        init = object.__setattr__
        init(self, "network", network)
        init(self, "mtu", mtu)
        init(self, "offload", offload)
        init(self, "allow_host_loopback", allow_host_loopback)
        init(self, "guest_mac", guest_mac)
        init(self, "limits", limits)
        init(self, "dns_enabled", dns_enabled)
        init(self, "dns_upstream", dns_upstream)
        init(self, "resolv_conf", resolv_conf)
        init(self, "outbound_addr", outbound_addr)
        init(self, "network6", network6)
        init(self, "outbound_addr6", outbound_addr6)
        init(self, "routed", routed)
        init(self, "ports", ports)
        init(self, "auto_publish", auto_publish)

    def bind_address_for(self, host: str) -> str | None:
        """The local address an outbound host socket to `host` binds to, or None. Loopback
        destinations (host loopback, a loopback DNS upstream) are never bound to it."""
        if ":" in host:
            if host == "::1" or host.startswith("::ffff:127."):
                return None
            return self.outbound_addr6
        if self.outbound_addr is None or host.startswith("127."):
            return None
        return self.outbound_addr

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 2

    @property
    def dns(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 3

    @property
    def guest(self) -> ipaddress.IPv4Address:
        return self.network.network_address + 100

    @property
    def ipv6(self) -> bool:
        return self.network6 is not None

    @property
    def gateway6(self) -> ipaddress.IPv6Address:
        """The IPv6 gateway (network6 + 2); only meaningful when `ipv6`."""
        return self._net6.network_address + 2

    @property
    def dns6(self) -> ipaddress.IPv6Address:
        return self._net6.network_address + 3

    @property
    def guest6(self) -> ipaddress.IPv6Address:
        return self._net6.network_address + 0x100       # fd00::100, as slirp4netns

    @property
    def _net6(self) -> ipaddress.IPv6Network:
        if self.network6 is None:
            raise ValueError("IPv6 is off in this NetConfig")
        return self.network6

    @property
    def gateway_mac(self) -> bytes:
        return _mac_for(self.gateway)

    @property
    def dns_mac(self) -> bytes:
        return _mac_for(self.dns)

    @property
    def guest_mss(self) -> int:
        """Largest TCP payload in one IPv4 packet at this MTU (no options)."""
        return self.mtu - 40

    @property
    def guest_mss6(self) -> int:
        """Largest TCP payload in one IPv6 packet at this MTU (no options or extension headers)."""
        return self.mtu - 60


class PortSpec(_Value):
    """One published port: host `host_addr:host_port` -> the guest's `guest_port`.

    `host_port` 0 means "any free port" (docker's `-p 80`); the listener picks one.
    `host_addr` is an IPv4 or IPv6 address in canonical text form. `guest_addr` (the API's,
    canonical text) is the sandbox address the clients reach, which picks the family; None:
    each client reaches the sandbox address of its own family (IPv4 without IPv6).
    """

    __slots__ = ("proto", "host_addr", "host_port", "guest_port", "guest_addr")
    proto: str
    host_addr: str
    host_port: int
    guest_port: int
    guest_addr: str | None

    def __init__(self, proto: str, host_addr: str, host_port: int, guest_port: int,
                 guest_addr: str | None = None) -> None:
        init = object.__setattr__
        init(self, "proto", proto)
        init(self, "host_addr", host_addr)
        init(self, "host_port", host_port)
        init(self, "guest_port", guest_port)
        init(self, "guest_addr", guest_addr)

    def __str__(self) -> str:
        addr = f"[{self.host_addr}]" if ":" in self.host_addr else self.host_addr
        return f"{addr}:{self.host_port}:{self.guest_port}/{self.proto}"


class AutoPublish(_Value):
    """`-p auto[/tcp|/udp]`: publish every port the sandbox binds (autoports.py does it), on
    host `host_addr` (`--publish-auto-addr`), each on the same host port."""

    __slots__ = ("protos", "host_addr")
    protos: tuple[str, ...]
    host_addr: str

    def __init__(self, protos: tuple[str, ...] = PORT_PROTOS, host_addr: str = DEFAULT_AUTO_ADDR) -> None:
        object.__setattr__(self, "protos", protos)
        object.__setattr__(self, "host_addr", host_addr)
