"""Configuration: frozen values parsed once at start-up, read everywhere.

Nothing here does I/O. `NetConfig` follows slirp4netns's addressing: in a network N/len the
gateway is N+2, the DNS forwarder N+3 and the guest N+100.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MTU_MIN = 576           # RFC 791 minimum reassembly size; below it IPv4 is not usable
MTU_MAX = 65520         # largest MTU a TAP device takes (same limit as slirp4netns)
DEFAULT_MTU = 65520
DEFAULT_CIDR = "10.0.2.0/24"
CIDR_PREFIX_MIN = 1
CIDR_PREFIX_MAX = 25    # the guest is network+100: a /25 is the smallest that still holds it



class ConfigError(ValueError):
    """A user-supplied value is out of range; the message names the value and the range."""


def parse_mtu(value: str | int) -> int:
    try:
        mtu = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid MTU {value!r}: must be an integer from {MTU_MIN} to {MTU_MAX}") from None
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise ConfigError(f"invalid MTU {mtu}: must be from {MTU_MIN} to {MTU_MAX}")
    return mtu


def parse_cidr(value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except (ValueError, TypeError):
        raise ConfigError(
            f"invalid CIDR {value!r}: must be an IPv4 network such as {DEFAULT_CIDR} "
            f"with a prefix length from {CIDR_PREFIX_MIN} to {CIDR_PREFIX_MAX}"
        ) from None
    if not CIDR_PREFIX_MIN <= net.prefixlen <= CIDR_PREFIX_MAX:
        raise ConfigError(
            f"invalid CIDR {value!r}: prefix length must be from {CIDR_PREFIX_MIN} to {CIDR_PREFIX_MAX}"
        )
    return net


def parse_dns_upstream(value: str) -> tuple[str, int]:
    """`ADDR[:PORT]` (IPv6 as `[ADDR]:PORT` or bare) -> (addr, port); port defaults to 53."""
    text = value.strip()
    addr, port = text, "53"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"invalid DNS upstream {value!r}: missing ']'")
        addr, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"invalid DNS upstream {value!r}: expected ADDR[:PORT]")
            port = rest[1:]
    elif text.count(":") == 1:
        addr, port = text.split(":")
    try:
        ip = ipaddress.ip_address(addr)
        portnum = int(port)
    except ValueError:
        raise ConfigError(f"invalid DNS upstream {value!r}: expected an IP address with an optional :PORT") from None
    if not 1 <= portnum <= 65535:
        raise ConfigError(f"invalid DNS upstream {value!r}: port must be from 1 to 65535")
    return str(ip), portnum


def _mac_for(ip: ipaddress.IPv4Address) -> bytes:
    # libslirp's layout for its virtual hosts: 52:55 followed by the IPv4 address.
    return b"\x52\x55" + ip.packed


@dataclass(frozen=True)
class Limits:
    """Every bound the stack enforces. Defaults suit a laptop; all are flags later."""

    max_tcp_flows: int = 65536
    max_half_open: int = 1024          # guest SYNs waiting for the host connect
    max_neighbours: int = 256          # ARP table entries
    tcp_rcv_buf: int = 4 << 20         # bytes: window we advertise (guest -> host in flight)
    tcp_snd_buf: int = 4 << 20         # bytes buffered host -> guest before host reads pause
    tcp_time_wait: float = 2.0         # seconds
    tcp_syn_timeout: float = 75.0      # give up on a guest that never finishes the handshake
    max_udp_flows: int = 4096          # UDP flows (one host socket each); oldest idle evicted
    udp_timeout: float = 30.0          # seconds idle before a UDP flow without a reply expires
    udp_timeout_replied: float = 180.0  # ... once the host side has answered at least once
    dns_timeout: float = 10.0          # idle expiry of a UDP flow to the DNS forwarder
    max_icmp_flows: int = 256          # ICMP echo flows (guest ident, destination)
    icmp_timeout: float = 30.0         # seconds idle before an echo flow expires


@dataclass(frozen=True)
class NetConfig:
    network: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network(DEFAULT_CIDR))
    mtu: int = DEFAULT_MTU
    offload: bool = True                  # IFF_VNET_HDR + TSO/CSUM offloads on the TAP
    allow_host_loopback: bool = False     # gateway address reaches host 127.0.0.1
    guest_mac: bytes | None = None        # tap0's MAC; None lets the kernel pick one
    limits: Limits = field(default_factory=Limits)
    dns_enabled: bool = True              # forward DNS at network+3 (UDP and TCP port 53)
    dns_upstream: tuple[str, int] | None = None   # override the host's resolv.conf nameservers
    resolv_conf: str = "/etc/resolv.conf"  # the host file the upstreams and search lines come from

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
    def gateway_mac(self) -> bytes:
        return _mac_for(self.gateway)

    @property
    def dns_mac(self) -> bytes:
        return _mac_for(self.dns)

    @property
    def guest_mss(self) -> int:
        """Largest TCP payload in one IPv4 packet at this MTU (no options)."""
        return self.mtu - 40
