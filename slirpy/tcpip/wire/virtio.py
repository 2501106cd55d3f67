"""The virtio-net header that prefixes every frame on an IFF_VNET_HDR TAP (virtio spec §5.1.6).

With `TUNSETVNETHDRSZ` = 12 each frame read from or written to the TAP starts with this
header (`struct virtio_net_hdr_mrg_rxbuf`). All fields are little-endian on this host
(a little-endian device, or `TUNSETVNETLE`). `hdr_len` and `csum_start` count from the first
byte of the Ethernet header, not of the virtio header. See DESIGN.md §3 for what the kernel
actually sends and accepts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..errors import MalformedPacket

VNET_HDR_LEN: Final = 12
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers
VNET_HDR: Final = struct.Struct("<BBHHHHH")

F_NEEDS_CSUM: Final = 1     # checksum from csum_start to the end, stored at csum_start + csum_offset
F_DATA_VALID: Final = 2     # the checksum has already been validated

GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80       # flag bit on gso_type: the segments carry CWR

# Accepted gso_type values, as the kernel's virtio_net_hdr_to_skb() accepts them: NONE, or a
# segmentation type optionally with the ECN bit (ECN alone is EINVAL there).
_GSO_TYPES: Final = frozenset(
    (GSO_NONE,)
    + tuple(t | e for t in (GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4) for e in (0, GSO_ECN))
)

ZERO_HEADER: Final = bytes(VNET_HDR_LEN)


@dataclass(frozen=True, slots=True)
class VirtioNetHeader:
    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int
    num_buffers: int = 0

    @property
    def gso_kind(self) -> int:
        """`gso_type` without the ECN bit."""
        return self.gso_type & ~GSO_ECN

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & F_NEEDS_CSUM)

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> "VirtioNetHeader":
        """Parse the first 12 bytes of `buf` (the frame follows at offset VNET_HDR_LEN)."""
        checksum_trusted(buf)                       # the length check
        fields = VNET_HDR.unpack_from(buf, 0)
        if fields[1] not in _GSO_TYPES:
            raise MalformedPacket("virtio.bad_gso_type")
        return cls(*fields)

    def pack(self) -> bytes:
        return VNET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size,
                             self.csum_start, self.csum_offset, self.num_buffers)


def checksum_trusted(buf: bytes | bytearray | memoryview) -> bool:
    """Whether the kernel vouches for the checksums of the frame after this header (NEEDS_CSUM:
    ours to ignore, it never left the machine; DATA_VALID: already checked). The one thing
    the receive path needs of a header it read from the TAP, whose other fields the kernel
    wrote for a frame it built (so VirtioNetHeader.parse's GSO-type check is not repeated)."""
    if len(buf) < VNET_HDR_LEN:
        raise MalformedPacket("virtio.short")
    return bool(buf[0] & (F_NEEDS_CSUM | F_DATA_VALID))
