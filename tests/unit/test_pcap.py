"""The pcap writer and link filter (slirpy.pcap): file and record headers byte for byte,
nanosecond timestamps, the virtio header stripped, tuple frames, the size bound, write errors,
buffering, the filter's place on the link and the API requests."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import struct
from collections import defaultdict

import pytest

from slirpy import api
from slirpy import pcap as P
from slirpy.tcpip.wire.virtio import VNET_HDR_LEN


def frame(n: int, fill: int = 0xAB) -> bytes:
    return bytes([fill]) * n


class Clock:
    def __init__(self, start: int = 1_700_000_000_123_456_789):
        self.t = start

    def __call__(self) -> int:
        self.t += 1_000
        return self.t


def records(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """(sec, nsec, caplen, origlen, bytes) of every record after the file header."""
    out = []
    off = 24
    while off < len(data):
        sec, nsec, caplen, orig = struct.unpack_from("<IIII", data, off)
        out.append((sec, nsec, caplen, orig, data[off + 16: off + 16 + caplen]))
        off += 16 + caplen
    assert off == len(data), "a record runs past the end of the file"
    return out


def make(tmp_path, **kw) -> tuple[P.Capture, str, defaultdict]:
    path = str(tmp_path / "c.pcap")
    counters: defaultdict = defaultdict(int)
    kw.setdefault("vnet_hdr", False)
    kw.setdefault("max_size", P.DEFAULT_MAX_SIZE)
    cap = P.Capture(path, kw.pop("max_size"), counters=counters, clock=kw.pop("clock", Clock()), **kw)
    return cap, path, counters


def test_file_header_bytes():
    h = P.file_header()
    assert h == bytes.fromhex("4d3cb2a1" "0200" "0400" "00000000" "00000000") + \
        struct.pack("<I", P.SNAPLEN) + struct.pack("<I", 1)
    assert P.SNAPLEN >= 65535 + 14


def test_records_with_nanosecond_timestamps(tmp_path):
    clock = Clock(1_700_000_000_999_999_500)
    cap, path, c = make(tmp_path, clock=clock)
    cap.record(frame(60, 1), 0.0)
    cap.record(frame(1514, 2), 0.0)
    assert os.path.getsize(path) == 24          # the header at once, records buffered
    cap.stop()
    data = open(path, "rb").read()
    assert data[:24] == P.file_header()
    recs = records(data)
    # 1_700_000_000_999_999_500 + 1000 -> crosses into the next second
    assert recs[0][:4] == (1_700_000_001, 500, 60, 60) and recs[0][4] == frame(60, 1)
    assert recs[1][:4] == (1_700_000_001, 1500, 1514, 1514) and recs[1][4] == frame(1514, 2)
    assert c["pcap.frames"] == 2 and c["pcap.bytes"] == len(data)
    assert c["pcap.stopped.request"] == 1 and c["pcap.captures"] == 1


def test_vnet_header_stripped_and_tuple_frames_joined(tmp_path):
    cap, path, c = make(tmp_path, vnet_hdr=True)
    vnet = b"\x01" + bytes(VNET_HDR_LEN - 1)
    eth = bytes(range(14))
    payload = frame(3000, 7)
    cap.record(vnet + eth + payload, 0.0)                                # bytes from the TAP
    cap.record((vnet + eth, memoryview(payload), bytearray(b"xyz")), 0.0)   # writev parts
    cap.record((vnet[:5], vnet[5:] + eth[:3], eth[3:]), 0.0)             # header split across parts
    cap.record(vnet, 0.0)                                                # nothing after the header
    cap.stop()
    recs = records(open(path, "rb").read())
    assert [r[4] for r in recs] == [eth + payload, eth + payload + b"xyz", eth]
    assert [(r[2], r[3]) for r in recs] == [(3014, 3014), (3017, 3017), (14, 14)]
    assert c["pcap.frames"] == 3


def test_snaplen_truncates_and_keeps_the_original_length(tmp_path):
    cap, path, c = make(tmp_path, snaplen=100)
    cap.record((frame(80, 1), frame(80, 2)), 0.0)
    cap.stop()
    (rec,) = records(open(path, "rb").read())
    assert rec[2:4] == (100, 160) and rec[4] == frame(80, 1) + frame(20, 2)
    assert c["pcap.truncated"] == 1


def test_max_size_stops_before_the_record_that_would_cross_it(tmp_path):
    limit = 24 + 3 * (16 + 100) + 50
    cap, path, c = make(tmp_path, max_size=limit)
    stopped = []
    cap.on_stop = stopped.append
    for _ in range(5):
        cap.record(frame(100), 0.0)
    assert not cap.running and stopped == [cap]
    assert os.path.getsize(path) == 24 + 3 * 116 <= limit
    assert len(records(open(path, "rb").read())) == 3
    assert c["pcap.stopped.max_size"] == 1 and c["pcap.drop.max_size"] == 1
    assert c["pcap.frames"] == 3
    assert cap.info()["stopped"] == "max_size"


def test_flush_when_the_buffer_is_full_and_after_the_interval(tmp_path):
    cap, path, c = make(tmp_path)
    cap.record(frame(60), 10.0)
    assert cap.flush_at == 10.0 + P.FLUSH_INTERVAL
    big = frame(65000)
    n = P.FLUSH_BYTES // 65016 + 1
    for _ in range(n):
        cap.record(big, 10.1)
    size = os.path.getsize(path)
    assert size > P.FLUSH_BYTES and c["pcap.frames"] == n + 1 and cap.flush_at is None
    cap.stop()


class FakeStack:
    vnet_hdr = False

    def __init__(self):
        self.received: list = []
        self.out: list = []
        self.deadline: float | None = None

    def receive_frame(self, frame, now):
        self.received.append(frame)

    def frames_to_send(self, now):
        out, self.out = self.out, []
        return out

    def next_deadline(self):
        return self.deadline


class Owner:
    def __init__(self):
        self.stack = FakeStack()
        self.link = self.stack
        self.counters: defaultdict = defaultdict(int)


def test_link_filter_records_both_directions_and_unwraps_on_stop(tmp_path):
    owner = Owner()
    path = str(tmp_path / "l.pcap")
    cap = P.start_capture(owner, path, 1 << 20)
    link = owner.link
    assert isinstance(link, P.PcapLink) and link.inner is owner.stack
    with pytest.raises(ValueError, match="running"):
        P.start_capture(owner, path)
    link.receive_frame(b"in" * 30, 5.0)
    owner.stack.out = [b"out" * 20, (b"ab", b"cd" * 30)]
    assert link.frames_to_send(5.0) == [b"out" * 20, (b"ab", b"cd" * 30)]   # passed on untouched
    assert owner.stack.received == [b"in" * 30]
    # the buffered records' flush time joins the runtime's one timer
    owner.stack.deadline = 100.0
    assert link.next_deadline() == 5.0 + P.FLUSH_INTERVAL
    link.frames_to_send(5.0 + P.FLUSH_INTERVAL)
    assert os.path.getsize(path) == 24 + 3 * 16 + 60 + 60 + 62
    assert link.next_deadline() == 100.0
    assert P.stop_capture(owner) is cap and owner.link is owner.stack
    assert P.stop_capture(owner) is None
    assert [r[4] for r in records(open(path, "rb").read())] == [b"in" * 30, b"out" * 20, b"ab" + b"cd" * 30]


def test_limit_unwraps_the_link(tmp_path):
    owner = Owner()
    P.start_capture(owner, str(tmp_path / "m.pcap"), 24 + 16 + 60)
    owner.link.receive_frame(frame(60), 0.0)
    assert isinstance(owner.link, P.PcapLink)
    owner.link.receive_frame(frame(60), 0.0)       # would cross the limit: stops, still delivered
    assert owner.link is owner.stack and len(owner.stack.received) == 2
    assert owner.counters["pcap.stopped.max_size"] == 1 and owner.counters["pcap.frames"] == 1


def test_write_error_keeps_whole_records_and_stops(tmp_path, monkeypatch):
    cap, path, c = make(tmp_path)
    for i in range(4):
        cap.record(frame(100, i), 0.0)
    real_write = os.write
    calls = []

    def short_then_enospc(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:116 * 2 + 40]))      # 2 records and a part
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_enospc)
    cap.flush()
    monkeypatch.setattr(os, "write", real_write)
    assert not cap.running
    data = open(path, "rb").read()
    assert len(data) == 24 + 2 * 116 and [r[4] for r in records(data)] == [frame(100, 0), frame(100, 1)]
    assert c["pcap.stopped.write_error"] == 1 and c["pcap.drop.write_error"] == 2
    assert c["pcap.frames"] == 2
    cap.record(frame(10), 0.0)          # after the stop: ignored, no error
    cap.stop()
    assert c["pcap.stopped.request"] == 0


def test_refuses_to_overwrite_what_is_not_a_pcap(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("precious")
    with pytest.raises(ValueError, match="not a pcap"):
        P.Capture(str(p), 1 << 20, vnet_hdr=False, counters=defaultdict(int))
    assert p.read_text() == "precious"
    old = tmp_path / "old.pcap"
    old.write_bytes(P.file_header() + b"x" * 100)
    cap = P.Capture(str(old), 1 << 20, vnet_hdr=False, counters=defaultdict(int))
    cap.stop()
    assert old.read_bytes() == P.file_header()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO"):
        P.Capture(str(fifo), 1 << 20, vnet_hdr=False, counters=defaultdict(int))


@pytest.mark.parametrize("text, value", [
    ("1048576", 1 << 20), ("100M", 100 << 20), ("1G", 1 << 30), ("64k", 64 << 10),
    ("2GiB", 2 << 30), ("5MB", 5 << 20), (4096, 4096), (" 1t ", 1 << 40),
])
def test_parse_size(text, value):
    assert P.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "1.5G", "-1", "10X", "23", 0, True, "2P"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        P.parse_size(text)


class Ctl:
    guest_addr = "10.0.2.100"
    guest_addr6 = None

    def __init__(self):
        self.calls: list = []
        self.running = False

    def pcap_start(self, path, max_size):
        if self.running:
            raise ValueError("a capture to x is running; stop it first")
        if path.startswith("/nonexistent/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        self.running = True
        self.calls.append((path, max_size))
        return {"path": path, "max_size": max_size}

    def pcap_stop(self):
        if not self.running:
            return None
        self.running = False
        return {"path": "p", "frames": 3, "bytes": 99}


def ask(ctl, obj) -> dict:
    return json.loads(asyncio.run(api.handle(ctl, json.dumps(obj).encode())))


def test_api_pcap_start_and_stop():
    ctl = Ctl()
    assert ask(ctl, {"execute": "pcap_stop"}) == {
        "error": {"desc": "bad request: pcap_stop: no capture is running"}}
    assert ask(ctl, {"execute": "pcap_start"}) == {
        "error": {"desc": "bad request: pcap_start: bad arguments.path"}}
    for bad in ("lots", -5, 1.5, None):
        assert ask(ctl, {"execute": "pcap_start", "arguments": {"path": "/p", "max_size": bad}}) == {
            "error": {"desc": "bad request: pcap_start: bad arguments.max_size"}}
    assert ask(ctl, {"execute": "pcap_start", "arguments": {"path": "/nonexistent/x"}}) == {
        "error": {"desc": "bad request: pcap_start: cannot write /nonexistent/x: No such file or directory"}}
    assert ask(ctl, {"execute": "pcap_start", "arguments": {"path": "/p", "max_size": "2M"}}) == {
        "return": {"path": "/p", "max_size": 2 << 20}}
    assert "is running" in ask(ctl, {"execute": "pcap_start", "arguments": {"path": "/q"}})["error"]["desc"]
    assert ask(ctl, {"execute": "pcap_stop"}) == {"return": {"path": "p", "frames": 3, "bytes": 99}}
    ask(ctl, {"execute": "pcap_start", "arguments": {"path": "/r"}})
    assert ctl.calls == [("/p", 2 << 20), ("/r", P.DEFAULT_MAX_SIZE)]
