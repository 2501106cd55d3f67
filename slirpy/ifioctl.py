"""The kernel's interface ioctls (<linux/sockios.h>): what configures tap0 before a sandbox runs.

Why not pyroute2 here: the TAP is configured on the critical path of start-up (slirp4netns
mode's ready fd, `slirpy run`'s command), and importing pyroute2 costs far more than everything
else that path does (its package imports every netlink family; perf/NOTES.md, "Start-up").
`fcntl` and `struct` cost nothing to import, and these requests are the kernel's own, older
interface for exactly this job: slirp4netns configures its TAP with the same ones.  pyroute2
stays where netlink is needed (bridges, veths, the networks' plumbing).

What the ioctls cannot say, netconf.py does otherwise: IPv6 sysctls are files under
/proc/sys, and the queue length is `ip link set ... txqueuelen` (SIOCSIFTXQLEN needs
CAP_NET_ADMIN in the initial user namespace, which a rootless sandbox never has).  Two
results differ from a netlink request: routes added by ioctl carry the protocol ``boot``
(as `ip route add` without `proto`), and an IPv6 address carries no IFA_F_NODAD flag (DAD
is off through the interface's ``accept_dad=0`` instead).

Each call raises OSError; the caller names the step.  Structures are packed with the
platform's own alignment (`@`), so that `unsigned long` and pointers have their C sizes.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct

SIOCADDRT = 0x890B
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFBRDADDR = 0x891A
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
SIOCSIFHWADDR = 0x8924
SIOCGIFINDEX = 0x8933

IFF_UP = 0x1
ARPHRD_ETHER = 1
RTF_UP = 0x1
RTF_GATEWAY = 0x2
RTN_UNICAST = 1
IFNAMSIZ = 16

# struct ifreq: the name, then a union whose largest member is struct ifmap (24 bytes on 64-bit).
_UNION = max(16, struct.calcsize("@LLHBBB0L"))
IFREQ_SIZE = IFNAMSIZ + _UNION
_IFR_SHORT = struct.Struct(f"@{IFNAMSIZ}sh{_UNION - 2}x")       # ifr_flags
_IFR_INT = struct.Struct(f"@{IFNAMSIZ}si{_UNION - 4}x")         # ifr_mtu, ifr_ifindex, ifr_qlen
_IFR_SOCKADDR = struct.Struct(f"@{IFNAMSIZ}sH14s{_UNION - 16}x")  # ifr_addr/netmask/hwaddr
_SIN_DATA = struct.Struct("!H4s8x")                             # sockaddr_in after sin_family
# struct rtentry: pad1, dst, gateway, genmask, flags, pad2, pad3, pad4, metric, dev, mtu,
# window, irtt (then padding to its alignment).
_RTENTRY = struct.Struct("@L16s16s16sHhLPhPLLH0L")
_IN6_IFREQ = struct.Struct("@16sIi")                            # addr, prefixlen, ifindex
# struct in6_rtmsg: dst, src, gateway, type, dst_len, src_len, metric, info, flags, ifindex.
_IN6_RTMSG = struct.Struct("@16s16s16sIHHILIi")


def _name(ifname: str) -> bytes:
    raw = ifname.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise ValueError(f"invalid interface name {ifname!r}: 1 to {IFNAMSIZ - 1} bytes")
    return raw


def sockaddr_in(addr: str) -> bytes:
    """struct sockaddr_in (16 bytes) for IPv4 `addr`, port 0."""
    return struct.pack("=H", socket.AF_INET) + _SIN_DATA.pack(0, socket.inet_pton(socket.AF_INET, addr))


def ifreq_int(ifname: str, value: int) -> bytes:
    return _IFR_INT.pack(_name(ifname), value)


def ifreq_flags(ifname: str, flags: int) -> bytes:
    return _IFR_SHORT.pack(_name(ifname), flags)


def ifreq_addr(ifname: str, addr: str) -> bytes:
    sin = sockaddr_in(addr)
    return _IFR_SOCKADDR.pack(_name(ifname), socket.AF_INET, sin[2:])


def ifreq_hwaddr(ifname: str, mac: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"invalid MAC address {mac.hex()!r}: must be 6 bytes")
    return _IFR_SOCKADDR.pack(_name(ifname), ARPHRD_ETHER, mac)


def rtentry_default4(gateway: str, dev_ptr: int) -> bytes:
    """struct rtentry: 0.0.0.0/0 via `gateway`, on the interface whose NUL-terminated name is at
    address `dev_ptr` (0: the kernel picks it from the gateway's route)."""
    zero = sockaddr_in("0.0.0.0")
    return _RTENTRY.pack(0, zero, sockaddr_in(gateway), zero, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0,
                         dev_ptr, 0, 0, 0)


def in6_ifreq(addr: str, prefixlen: int, ifindex: int) -> bytes:
    return _IN6_IFREQ.pack(socket.inet_pton(socket.AF_INET6, addr), prefixlen, ifindex)


def in6_rtmsg_default(gateway: str, ifindex: int) -> bytes:
    """struct in6_rtmsg: ::/0 via `gateway` on `ifindex`, the kernel's default metric (1024)."""
    zero = bytes(16)
    return _IN6_RTMSG.pack(zero, zero, socket.inet_pton(socket.AF_INET6, gateway), RTN_UNICAST,
                           0, 0, 0, 0, RTF_UP | RTF_GATEWAY, ifindex)


class Interfaces:
    """The ioctls on one interface of the current network namespace, over one AF_INET datagram
    socket (and an AF_INET6 one, opened on first use).  Use as a context manager."""

    def __init__(self) -> None:
        self._sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock6: socket.socket | None = None

    def __enter__(self) -> "Interfaces":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock4.close()
        if self._sock6 is not None:
            self._sock6.close()

    def _v6(self) -> socket.socket:
        if self._sock6 is None:
            self._sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._sock6

    def index(self, ifname: str) -> int:
        got = fcntl.ioctl(self._sock4, SIOCGIFINDEX, ifreq_int(ifname, 0))
        return int(_IFR_INT.unpack(got)[1])

    def set_up(self, ifname: str) -> None:
        got = fcntl.ioctl(self._sock4, SIOCGIFFLAGS, ifreq_flags(ifname, 0))
        flags = _IFR_SHORT.unpack(got)[1]
        if not flags & IFF_UP:
            fcntl.ioctl(self._sock4, SIOCSIFFLAGS, ifreq_flags(ifname, flags | IFF_UP))

    def set_mtu(self, ifname: str, mtu: int) -> None:
        fcntl.ioctl(self._sock4, SIOCSIFMTU, ifreq_int(ifname, mtu))

    def set_mac(self, ifname: str, mac: bytes) -> None:
        fcntl.ioctl(self._sock4, SIOCSIFHWADDR, ifreq_hwaddr(ifname, mac))

    def add_addr4(self, ifname: str, addr: str, netmask: str) -> None:
        """The address, then its netmask (the kernel first gives it the classful one), then no
        broadcast address: the kernel sets one with SIOCSIFADDR, which the netlink request
        slirpy made before did not (the subnet's broadcast route exists either way)."""
        fcntl.ioctl(self._sock4, SIOCSIFADDR, ifreq_addr(ifname, addr))
        fcntl.ioctl(self._sock4, SIOCSIFNETMASK, ifreq_addr(ifname, netmask))
        fcntl.ioctl(self._sock4, SIOCSIFBRDADDR, ifreq_addr(ifname, "0.0.0.0"))

    def add_default4(self, ifname: str, gateway: str) -> None:
        dev = array.array("B", _name(ifname) + b"\0")     # rt_dev points at a C string
        fcntl.ioctl(self._sock4, SIOCADDRT, rtentry_default4(gateway, dev.buffer_info()[0]))

    def add_addr6(self, ifindex: int, addr: str, prefixlen: int) -> None:
        fcntl.ioctl(self._v6(), SIOCSIFADDR, in6_ifreq(addr, prefixlen, ifindex))

    def add_default6(self, ifindex: int, gateway: str) -> None:
        fcntl.ioctl(self._v6(), SIOCADDRT, in6_rtmsg_default(gateway, ifindex))
