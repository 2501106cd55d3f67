"""RecvBlocks (where host TCP reads land) and the protocol's immediate read pause."""

from __future__ import annotations

from slirpy.proxy import tcp as tcp_proxy
from slirpy.proxy.tcp import BLOCK, HostTcpProtocol, RecvBlocks


def _read(blocks: RecvBlocks, data: bytes):
    """What the event loop does for one read: fill the room, then hand over the count."""
    room = blocks.room()
    assert len(room) >= len(data) and not room.readonly
    room[:len(data)] = data
    return blocks.take(len(data))


def test_small_reads_are_copied_and_their_room_is_used_again():
    b = RecvBlocks()
    first = _read(b, b"GET / HTTP/1.1\r\n\r\n")
    assert type(first) is bytes and first == b"GET / HTTP/1.1\r\n\r\n"
    room = b.room()
    second = _read(b, b"x" * 100)
    assert first == b"GET / HTTP/1.1\r\n\r\n"          # a copy: not overwritten by the next read
    assert second == b"x" * 100 and len(b.room()) == len(room)   # nothing consumed
    assert b.allocated == 1


def test_large_reads_are_read_only_views_never_written_again():
    b = RecvBlocks()
    views = [_read(b, bytes([i]) * 40_000) for i in range(20)]   # spans several blocks
    assert all(type(v) is memoryview and v.readonly for v in views)
    assert [bytes(v) for v in views] == [bytes([i]) * 40_000 for i in range(20)]
    assert b.allocated >= 20 * 40_000 // BLOCK


def test_a_full_block_is_filled_again_only_once_no_view_of_it_is_left():
    b = RecvBlocks()
    kept = _read(b, b"a" * 200_000)                  # block 1, held by `kept`
    _read(b, b"b" * 40_000)                          # less than 64 KiB of room left: block 2
    transient = _read(b, b"c" * 200_000)             # fits in block 2
    _read(b, b"d" * 30_000)                          # block 3: blocks 1 and 2 are both held
    assert (b.allocated, b.reused) == (3, 0)
    del transient
    _read(b, b"e" * 200_000)                         # fills block 3
    _read(b, b"f" * 30_000)                          # next block: 1 still held, 2 is free
    assert (b.allocated, b.reused) == (3, 1)
    assert bytes(kept) == b"a" * 200_000             # the held block was never written
    del kept
    for _ in range(8):
        _read(b, b"g" * 200_000)
    assert b.allocated == 3                          # from here on only reuse


class _Transport:
    def __init__(self):
        self.paused = False

    def pause_reading(self):
        self.paused = True


class _Stack:
    def __init__(self, pause: bool, allowance: int = 1 << 30):
        self.pause = pause
        self.allowance = allowance
        self.got = []

    def tcp_host_allowance(self, flow_id):
        return self.allowance

    def tcp_host_data(self, flow_id, data, now):
        self.got.append(bytes(data))
        return self.pause


class _Runtime:
    def __init__(self, stack):
        self.stack = stack
        self.recv_blocks = RecvBlocks()
        self.flushes = 0

    def request_flush(self):
        self.flushes += 1

    def host_data_read(self, flow_id, nbytes):
        self.flushes += 1


def test_reads_pause_at_once_when_the_stack_says_so():
    # libuv reads a readable socket up to 32 times before the loop runs our flush, so the
    # pause must happen inside the read callback, not when the event is dispatched later.
    for pause in (False, True):
        rt = _Runtime(_Stack(pause))
        proto = HostTcpProtocol(rt, 7)
        proto.transport = _Transport()
        room = proto.get_buffer(-1)
        room[:50_000] = b"z" * 50_000
        proto.buffer_updated(50_000)
        assert rt.stack.got == [b"z" * 50_000] and rt.flushes == 1
        assert proto.transport.paused is pause


def test_a_read_takes_no_more_than_the_stack_allows():
    rt = _Runtime(_Stack(False, allowance=20_000))
    proto = HostTcpProtocol(rt, 7)
    assert len(proto.get_buffer(-1)) == 20_000
    rt.stack.allowance = 1 << 30
    assert len(proto.get_buffer(-1)) == len(rt.recv_blocks.room()) > 20_000


def test_module_constants_are_consistent():
    assert tcp_proxy._COPY_BELOW < tcp_proxy._MIN_ROOM < BLOCK
