"""TapDevice: the guest end of slirpy, a Linux TAP interface opened through /dev/net/tun.

With offloads (the default) the device is opened with ``IFF_VNET_HDR``, the virtio-net header
size is set to 12 bytes and ``TUNSETOFFLOAD`` enables ``TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6``: every
frame read or written is then preceded by a 12-byte ``virtio_net_hdr_v1`` and the kernel hands us
TCP super-frames (see DESIGN.md section 3; the header format lives in ``tcpip/wire/virtio.py``).
If the kernel refuses any of this, the device is reopened as a plain TAP and the reason is kept
in ``fallback_reason`` so the caller can print a notice.

Only ``fcntl.ioctl`` is used; no python-pytun.  The device is not persistent: it disappears when
the last fd to it is closed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

TUN_PATH = "/dev/net/tun"

# <linux/if_tun.h>: ioctl numbers (_IOW/_IOR('T', nr, int)).
TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNGETVNETHDRSZ = 0x800454D7
TUNSETVNETHDRSZ = 0x400454D8

# TUNSETIFF flags.
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

# TUNSETOFFLOAD flags.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10

OFFLOAD_FLAGS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
# sizeof(struct virtio_net_hdr_v1), num_buffers included: tcpip/wire/virtio.py's VNET_HDR_LEN (a
# test checks they agree; not imported from there, which would load the compiled core at start-up).
VNET_HDR_LEN = 12
IFNAMSIZ = 16

_IFREQ = struct.Struct("=16sH22x")   # struct ifreq: ifr_name, ifr_flags, padding to 40 bytes
_INT = struct.Struct("=i")
_UINT = struct.Struct("=I")


class TapError(OSError):
    """Creating or configuring the TAP device failed; ``strerror`` says which step."""


class TapDevice:
    # A plain class, not a dataclass: slirp4netns mode opens its TAP before it imports
    # dataclasses (perf/NOTES.md, "Start-up").
    def __init__(self, fd: int, name: str, vnet_hdr: bool, offload: bool,
                 fallback_reason: str | None = None) -> None:
        self.fd, self.name, self.vnet_hdr, self.offload = fd, name, vnet_hdr, offload
        self.fallback_reason = fallback_reason

    @classmethod
    def create(cls, name: str = "tap0", offload: bool = True) -> "TapDevice":
        """Create the TAP device `name` in the current network namespace.

        Needs CAP_NET_ADMIN over the namespace (slirpy has it inside its user namespace).
        The returned fd is non-blocking and close-on-exec.
        """
        raw = name.encode()
        if not raw or len(raw) >= IFNAMSIZ:
            raise ValueError(f"invalid interface name {name!r}: 1 to {IFNAMSIZ - 1} bytes")
        if not offload:
            fd, actual = _open_tap(raw, IFF_TAP | IFF_NO_PI)
            return cls(fd=fd, name=actual, vnet_hdr=False, offload=False)
        fd, actual = _open_tap(raw, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        try:
            _enable_offload(fd)
        except OSError as exc:
            os.close(fd)
            reason = exc.strerror or str(exc)
            fd, actual = _open_tap(raw, IFF_TAP | IFF_NO_PI)
            return cls(fd=fd, name=actual, vnet_hdr=False, offload=False, fallback_reason=reason)
        return cls(fd=fd, name=actual, vnet_hdr=True, offload=True)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _open_tap(name: bytes, flags: int) -> tuple[int, str]:
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TapError(exc.errno, f"cannot open {TUN_PATH}: {exc.strerror}", TUN_PATH) from None
    try:
        res = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name, flags))
    except OSError as exc:
        os.close(fd)
        what = "TAP with virtio-net header" if flags & IFF_VNET_HDR else "TAP"
        raise TapError(exc.errno, f"cannot create {what} {name.decode()!r} (TUNSETIFF): {exc.strerror}") from None
    actual = _IFREQ.unpack(res)[0].rstrip(b"\0").decode()
    return fd, actual


def _enable_offload(fd: int) -> None:
    """Header size 12 (verified), then CSUM+TSO. Raises OSError with a descriptive strerror."""
    try:
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, _INT.pack(VNET_HDR_LEN))
    except OSError as exc:
        raise OSError(exc.errno, f"TUNSETVNETHDRSZ {VNET_HDR_LEN} refused: {exc.strerror}") from None
    try:
        got = _INT.unpack(fcntl.ioctl(fd, TUNGETVNETHDRSZ, _INT.pack(0)))[0]
    except OSError as exc:
        raise OSError(exc.errno, f"TUNGETVNETHDRSZ failed: {exc.strerror}") from None
    if got != VNET_HDR_LEN:
        raise OSError(errno.EINVAL, f"virtio-net header size is {got}, wanted {VNET_HDR_LEN}")
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, OFFLOAD_FLAGS)
    except OSError as exc:
        raise OSError(exc.errno, f"TUNSETOFFLOAD CSUM|TSO4|TSO6 refused: {exc.strerror}") from None


def tun_features() -> int:
    """TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports (needs /dev/net/tun)."""
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        return _UINT.unpack(fcntl.ioctl(fd, TUNGETFEATURES, _UINT.pack(0)))[0]
    finally:
        os.close(fd)
