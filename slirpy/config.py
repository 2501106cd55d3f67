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


@dataclass(frozen=True)
class NetConfig:
    network: ipaddress.IPv4Network = field(default_factory=lambda: ipaddress.IPv4Network(DEFAULT_CIDR))
    mtu: int = DEFAULT_MTU
    offload: bool = True                  # IFF_VNET_HDR + TSO/CSUM offloads on the TAP
    allow_host_loopback: bool = False     # gateway address reaches host 127.0.0.1
    guest_mac: bytes | None = None        # tap0's MAC; None lets the kernel pick one
    limits: Limits = field(default_factory=Limits)

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
