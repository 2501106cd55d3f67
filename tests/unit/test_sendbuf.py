"""SendBuffer against a plain bytearray model: appends of any size, front consumption, and
reads at any offset (in order, as new data is sent, and backwards, as retransmissions are)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from slirpy.tcpip.sendbuf import Gather, SendBuffer

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 20000)),
    st.tuples(st.just("consume"), st.integers(0, 30000)),
    st.tuples(st.just("get"), st.integers(0, 40000), st.integers(1, 70000)),
    st.tuples(st.just("scan"), st.integers(1, 9000)),
), max_size=60)


@settings(max_examples=400)
@given(ops)
def test_matches_a_bytearray_model(program):
    buf = SendBuffer()
    model = bytearray()
    counter = 0
    for op in program:
        if op[0] == "append":
            data = bytes((counter + i) & 0xFF for i in range(op[1]))
            counter += op[1]
            buf.append(data if counter % 3 else memoryview(data))
            model += data
        elif op[0] == "consume":
            n = min(op[1], len(model))
            buf.consume(n)
            del model[:n]
        elif op[0] == "get":
            off = min(op[1], len(model))
            n = min(op[2], len(model) - off)
            got = buf.get(off, n)
            assert bytes(got) == bytes(model[off:off + n])
            if type(got) is memoryview:
                assert got.readonly
        else:                                    # read everything in order, as a sender does
            step = op[1]
            for off in range(0, len(model), step):
                n = min(step, len(model) - off)
                assert bytes(buf.get(off, n)) == bytes(model[off:off + n])
        assert len(buf) == len(model)
        assert bool(buf) == bool(model)


def test_chunk_sized_reads_are_zero_copy_views():
    buf = SendBuffer()
    chunk = bytes(range(256)) * 1024                  # 256 KiB, as uvloop hands reads over
    buf.append(chunk)
    buf.append(chunk)
    first = buf.get(0, 65536)
    assert type(first) is memoryview and first.obj is chunk
    across = buf.get(len(chunk) - 10, 20)           # spans two chunks: views of both, no copy
    assert type(across) is Gather and len(across) == 20
    assert [p.obj for p in across.parts] == [chunk, chunk]
    assert bytes(across) == chunk[-10:] + chunk[:10] and across == chunk[-10:] + chunk[:10]
    buf.consume(len(chunk) + 5)
    assert bytes(buf.get(0, 3)) == chunk[5:8]


def test_small_writes_are_merged_so_the_chunk_list_stays_short():
    buf = SendBuffer()
    for i in range(10000):
        buf.append(b"x")
    assert len(buf) == 10000
    assert len(buf._chunks) <= 10000 // 4096 + 2


def test_gather_equals_bytes_like_only():
    # It used to compare against bytes(other): a Gather of n zero bytes equalled the int n.
    g = Gather([memoryview(bytes(3)), memoryview(bytes(2))], 5)
    assert g == bytes(5) and g == bytearray(5) and g == memoryview(bytes(5))
    assert g == Gather([memoryview(bytes(5))], 5)
    assert g != 5 and g != [0, 0, 0, 0, 0] and g != "\0" * 5
