"""Packet capture on the link: ``--pcap FILE``, ``slirpy pcap start|stop``.

Why it exists: a user whose connection from a sandbox hangs needs the packets, and the TAP
lives in a namespace where they cannot run tcpdump. This module writes every frame that
crosses the TAP, both directions, to a file that ``tcpdump -r`` and Wireshark/``tshark -r``
read.

Format: classic pcap (not pcapng), nanosecond timestamps (magic 0xa1b23c4d, written
little-endian), link type Ethernet, snaplen `SNAPLEN` so that a whole 64 KB GSO super-frame
fits. Frames are written as they crossed the TAP, without the virtio-net header: offloaded
super-frames stay super-frames (one record, IP total length up to 65535), and frames marked
NEEDS_CSUM carry the partial checksum the receiving kernel completes (the pseudo-header sum
only). Wireshark/tshark do not validate TCP/UDP checksums by default, so they show nothing;
with validation on (``-o tcp.check_checksum:TRUE``) they flag those as bad. Timestamps are
the wall clock when the frame passed the filter.

`PcapLink(inner, capture)` is a filter on the link, like impair.ImpairedLink: the runtime
reads the TAP into it and writes to the TAP what it returns. `start_capture` puts one in
front of the runtime's link (outermost, so it sees what really crosses the TAP, after any
impairment); when the capture stops, for whatever reason, the runtime's link is set back to
the inner one, so no capture costs nothing per frame.

Bounded: records are buffered (at most `FLUSH_BYTES` plus one frame) and written when the
buffer is full or `FLUSH_INTERVAL` seconds after its first record (through the runtime's
timer: `next_deadline`). The file never grows past ``max_size`` bytes: the record that would
cross it stops the capture (``pcap.stopped.max_size``). A failed write (ENOSPC, EIO, ...)
cuts the file back to its last whole record, logs one line and stops the capture
(``pcap.stopped.write_error``); the network never notices either.

Counters (in the runtime's dict, so ``slirpy stats`` shows them): ``pcap.frames`` and
``pcap.bytes`` (records and file bytes written, headers included), ``pcap.truncated``
(frames longer than the snaplen, cut), ``pcap.drop.max_size`` / ``pcap.drop.write_error``
(frames lost by a stop), ``pcap.captures``, ``pcap.stopped.request|max_size|write_error``.

Safety: an existing file is replaced only if it is empty or already a pcap file, never
anything else (the API socket can start a capture, and must not be a way to truncate any file
the user owns); FIFOs and sockets are refused (a blocked write would stall the network).
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import stat
import struct
import sys
import time
from typing import Any, Callable, Protocol

from .impair import FrameLink
from .tcpip.wire.virtio import VNET_HDR_LEN

log = logging.getLogger("slirpy")


def _warn(message: str) -> None:
    """One line on stderr, whatever the logging set-up (a capture's end is worth knowing)."""
    sys.stderr.write(f"slirpy: warning: pcap: {message}\n")
    sys.stderr.flush()

PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65600               # a whole 64 KB super-frame: 65535 of IP + Ethernet header
DEFAULT_MAX_SIZE = 1 << 30
FLUSH_BYTES = 1 << 20         # buffered bytes that trigger a write
FLUSH_INTERVAL = 1.0          # seconds a buffered record waits at most
FILE_HEADER = struct.Struct("<IHHiIII")   # magic, version 2.4, thiszone, sigfigs, snaplen, linktype
RECORD_HEADER = struct.Struct("<IIII")    # seconds, nanoseconds, captured length, original length
SIZE_MIN = FILE_HEADER.size
SIZE_MAX = 1 << 50

_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``"100M"`` -> bytes. Plain bytes or a K/M/G/T suffix (powers of 1024; ``MiB``/``MB``
    read the same). Raises ValueError with a one-line message."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.fullmatch(str(text))
        if m is None:
            raise ValueError(f"invalid size {text!r}: expected bytes, or a number with K, M, G "
                             "or T (e.g. 100M)")
        value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if not SIZE_MIN <= value <= SIZE_MAX:
        raise ValueError(f"invalid size {text!r}: must be from {SIZE_MIN} bytes to 1P")
    return value


def file_header(snaplen: int = SNAPLEN) -> bytes:
    return FILE_HEADER.pack(PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def _open(path: str) -> int:
    """Open `path` for a new capture (see "Safety" above); raises OSError / ValueError."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            raise ValueError(f"{path} is a FIFO or a socket; give a regular file")
        if stat.S_ISREG(st.st_mode):
            if st.st_size:
                head = os.pread(fd, 4, 0)
                magic = struct.unpack("<I", head)[0] if len(head) == 4 else 0
                if magic not in (PCAP_MAGIC_NS, PCAP_MAGIC_US) and \
                        struct.unpack(">I", head.rjust(4, b"\0"))[0] not in (PCAP_MAGIC_NS, PCAP_MAGIC_US):
                    raise ValueError(f"{path} exists and is not a pcap file; not overwriting it")
            os.ftruncate(fd, 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


class Capture:
    """One capture file: buffered records, the size bound, the stop on error."""

    def __init__(self, path: str, max_size: int, *, vnet_hdr: bool, counters: Any,
                 snaplen: int = SNAPLEN, clock: Callable[[], int] = time.time_ns):
        if max_size < SIZE_MIN:
            raise ValueError(f"max size {max_size} is below the pcap header's {SIZE_MIN} bytes")
        self.path = path
        self.max_size = max_size
        self.snaplen = snaplen
        self.counters = counters
        self._skip = VNET_HDR_LEN if vnet_hdr else 0
        self._clock = clock
        self._fd = _open(path)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._buf = bytearray()
        self._ends: list[int] = []       # offset in _buf after each buffered record
        self.flush_at: float | None = None
        self.written = 0                 # bytes in the file
        self.frames = 0                  # records in the file
        self.running = True
        self.stop_reason: str | None = None
        self.on_stop: Callable[[Capture], None] | None = None
        for name in ("frames", "bytes", "truncated", "drop.max_size", "drop.write_error"):
            counters["pcap." + name] += 0          # listed by `slirpy stats` from now on
        counters["pcap.captures"] += 1
        self._write(file_header(snaplen), 0)

    def record(self, frame: Any, now: float) -> None:
        """Append one frame (bytes, or a tuple of buffers for os.writev) as it crossed the TAP;
        nothing once the capture has stopped."""
        if not self.running:
            return
        skip = self._skip
        parts = frame if type(frame) is tuple else (frame,)
        length = -skip
        for p in parts:
            length += len(p)
        if length <= 0:
            return
        caplen = length if length <= self.snaplen else self.snaplen
        buf = self._buf
        if self.written + len(buf) + RECORD_HEADER.size + caplen > self.max_size:
            self.counters["pcap.drop.max_size"] += 1
            _warn(f"{self.path} reached its maximum size ({self.max_size} bytes): capture stopped")
            self.stop("max_size")
            return
        if caplen != length:
            self.counters["pcap.truncated"] += 1
        sec, nsec = divmod(self._clock(), 1_000_000_000)
        buf += RECORD_HEADER.pack(sec, nsec, caplen, length)
        left = caplen
        for p in parts:
            n = len(p)
            if skip >= n:
                skip -= n
                continue
            take = n - skip if n - skip < left else left
            buf += p if skip == 0 and take == n else memoryview(p)[skip:skip + take]
            left -= take
            skip = 0
            if not left:
                break
        self._ends.append(len(buf))
        if self.flush_at is None:
            self.flush_at = now + FLUSH_INTERVAL
        if len(buf) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records (a write error stops the capture)."""
        self.flush_at = None
        if not self._buf:
            return
        buf, ends = self._buf, self._ends
        self._buf, self._ends = bytearray(), []
        self._write(buf, len(ends), ends)

    def _write(self, data: bytes | bytearray, records: int, ends: list[int] | None = None) -> None:
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as e:
            if ends is None:                 # the file header: the caller sees the error
                raise
            good = bisect.bisect_right(ends, done)
            kept = ends[good - 1] if good else 0
            if self._regular and kept != done:
                try:
                    os.ftruncate(self._fd, self.written + kept)   # no half record at the end
                except OSError:
                    pass
            self._account(good, kept)
            self.counters["pcap.drop.write_error"] += records - good
            _warn(f"writing {self.path} failed ({e.strerror or e}): capture stopped, "
                  "the network goes on")
            self.stop("write_error")
            return
        finally:
            view.release()
        self._account(records, done)

    def _account(self, records: int, nbytes: int) -> None:
        self.written += nbytes
        self.frames += records
        c = self.counters
        c["pcap.frames"] += records
        c["pcap.bytes"] += nbytes

    def stop(self, reason: str = "request") -> None:
        """Flush what is buffered (unless a write error stopped it), close the file,
        tell `on_stop`. Idempotent."""
        if not self.running:
            return
        self.running = False
        if reason != "write_error":
            self.flush()                 # what is buffered fits under the limit
        self._buf = bytearray()
        self._ends = []
        self.flush_at = None
        if self.stop_reason is None:
            self.stop_reason = reason
            self.counters["pcap.stopped." + reason] += 1
        try:
            os.close(self._fd)
        except OSError:
            pass
        if self.on_stop is not None:
            self.on_stop(self)

    def info(self) -> dict:
        return {"path": self.path, "max_size": self.max_size, "frames": self.frames,
                "bytes": self.written, "running": self.running, "stopped": self.stop_reason}


class PcapLink:
    """A link filter: record every frame in both directions, then pass it on untouched."""

    def __init__(self, inner: FrameLink, capture: Capture):
        self.inner = inner
        self.capture = capture

    def receive_frame(self, frame: Any, now: float) -> None:
        cap = self.capture
        if cap.running:
            cap.record(frame, now)
        self.inner.receive_frame(frame, now)

    def frames_to_send(self, now: float) -> list[Any]:
        out = self.inner.frames_to_send(now)
        cap = self.capture
        if cap.running:
            record = cap.record
            for f in out:
                record(f, now)
            at = cap.flush_at
            if at is not None and now >= at and cap.running:
                cap.flush()
        return out

    def next_deadline(self) -> float | None:
        a = self.inner.next_deadline()
        b = self.capture.flush_at
        if a is None:
            return b
        if b is None:
            return a
        return a if a < b else b


class _HasVnet(Protocol):
    vnet_hdr: bool


class _Linked(Protocol):
    """What a capture is attached to: runtime.Runtime (its link, counters and stack)."""

    link: FrameLink
    counters: Any

    @property
    def stack(self) -> _HasVnet: ...


def running_capture(owner: _Linked) -> Capture | None:
    link = owner.link
    return link.capture if isinstance(link, PcapLink) and link.capture.running else None


def start_capture(owner: _Linked, path: str, max_size: int = DEFAULT_MAX_SIZE) -> Capture:
    """Open `path` and put a `PcapLink` in front of `owner.link`. Raises ValueError (a capture
    runs already, a bad file or size) or OSError (cannot open or write the file)."""
    current = running_capture(owner)
    if current is not None:
        raise ValueError(f"a capture to {current.path} is running; stop it first")
    cap = Capture(path, max_size, vnet_hdr=owner.stack.vnet_hdr, counters=owner.counters)
    link = PcapLink(owner.link, cap)

    def unlink(c: Capture) -> None:
        if owner.link is link:
            owner.link = link.inner

    cap.on_stop = unlink
    owner.link = link
    log.debug("pcap: capturing to %s (at most %d bytes)", path, max_size)
    return cap


def stop_capture(owner: _Linked) -> Capture | None:
    """Stop the running capture (flushing it); returns it, or None if none ran."""
    cap = running_capture(owner)
    if cap is not None:
        cap.stop("request")
    return cap
