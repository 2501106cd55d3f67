"""slirp4netns mode's way to its ready fd without importing config.py first.

Why: from exec to the ready fd is what RootlessKit and Podman wait for at every start, and
config.py's frozen dataclasses (with the `dataclasses` module and its import of `inspect`) were
a large part of it (perf/NOTES.md, "Start-up (issue 18, branch ss18)"; plain classes since,
configtypes.py, but config.py still costs its import).  For the options
those engines pass most often (no --cidr, --macaddress, --outbound-addr*, --api-socket; an MTU
config.py takes) the TAP's addresses are the default network's, and none of
config.build_net_config's checks can refuse them: `default_network` then gives the TAP's
settings at once (a netconf.TapNetwork), the forked child configures the TAP from them, the
ready fd is written, and the NetConfig is built afterwards by the same code as always.  Any
other option set returns None and takes the ordinary order (NetConfig, then the TAP).

tests/unit/test_quickready.py checks that `DefaultNetwork` equals what NetConfig computes,
that these constants are config.py's, and that every option set taken here builds a NetConfig.
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd
if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    class ParsedOptions(Protocol):
        """What this reads of slirp4netns.Options (a protocol: that module imports this one)."""
        cidr: str | None
        macaddress: str | None
        outbound_addr: str | None
        outbound_addr6: str | None
        api_socket: str | None
        target_type: str
        mtu: int
        enable_ipv6: bool


# config.py's values (checked equal by the unit test; importing config is what this avoids)
DEFAULT_CIDR = "10.0.2.0/24"
DEFAULT_CIDR6 = "fd00::/64"
MTU_MIN = 576
MTU_MAX = 65520
IPV6_MTU_MIN = 1280


class DefaultNetwork:
    """The default network's TAP settings (NetConfig's addressing rules: gateway N+2, guest
    N+100, IPv6 guest ::100 and gateway ::2), for `mtu` and IPv6 on or off."""

    def __init__(self, mtu: int, ipv6: bool) -> None:
        self.mtu = mtu
        self.ipv6 = ipv6
        self.offload = True
        self.guest_mac: bytes | None = None
        self.network = ipaddress.IPv4Network(DEFAULT_CIDR)
        self.gateway = self.network.network_address + 2
        self.guest = self.network.network_address + 100
        net6 = ipaddress.IPv6Network(DEFAULT_CIDR6)
        self.gateway6 = net6.network_address + 2
        self.guest6 = net6.network_address + 0x100


def default_network(o: ParsedOptions) -> DefaultNetwork | None:
    """The TAP settings of `o` when they are the default network's and slirp4netns.build_config
    cannot refuse `o`; None otherwise (build the NetConfig first)."""
    if (o.cidr is not None or o.macaddress is not None or o.outbound_addr is not None
            or o.outbound_addr6 is not None or o.api_socket is not None or o.target_type != "netns"):
        return None
    if not MTU_MIN <= o.mtu <= MTU_MAX or (o.enable_ipv6 and o.mtu < IPV6_MTU_MIN):
        return None
    return DefaultNetwork(o.mtu, o.enable_ipv6)
