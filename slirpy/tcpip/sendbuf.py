"""SendBuffer: bytes queued for the peer, kept as the immutable chunks they arrived in.

A `bytearray` trimmed from the front on every ACK looks cheap, but CPython copies the whole
buffer whenever one that was trimmed from the front must grow (its logical start is moved
back to the allocation's start), a cost that grows with what is queued (perf/NOTES.md). Here
host reads are appended as they are (`bytes`, or a
read-only `memoryview` whose owner never writes those bytes again: proxy/tcp.py RecvBlocks),
acknowledged bytes are dropped by moving an offset, and a segment inside one chunk is a
zero-copy `memoryview` of it that goes straight to `os.writev`. A segment that spans chunks
is a `Gather` of the chunks' views, which `os.writev` also takes as they are (joining them
would copy those bytes once more). Tiny writes are merged into the last chunk so that the
chunk list stays short (bounded by the queued bytes / `_MERGE_BELOW`).

`get(offset, n)` is called in increasing offsets for new data, so a cursor (the chunk where
the last read ended) makes it O(1) amortized; a retransmission from the front rescans.
"""

from __future__ import annotations

from typing import ClassVar, Final, TypeAlias

_MERGE_BELOW: Final = 4096

# A queued chunk: `bytes`, or a read-only view whose owner never writes those bytes again.
Chunk: TypeAlias = bytes | memoryview


class Gather:
    """`n` bytes that span chunks, kept as the chunks' memoryviews (`parts`) for a writev.

    Sized like the bytes it stands for; `bytes(g)` joins them; compares equal to equal bytes."""

    __slots__ = ("parts", "_n")

    def __init__(self, parts: list[memoryview], n: int) -> None:
        self.parts = parts
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Gather):
            other = bytes(other)
        if isinstance(other, (bytes, bytearray, memoryview)):
            return bytes(self) == bytes(other)
        return NotImplemented

    # Unhashable, like the bytearray it may compare equal to (typeshed's idiom for that).
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Gather({len(self.parts)} parts, {self._n} bytes)"


class SendBuffer:
    __slots__ = ("_chunks", "_first", "_head", "_len", "_cur_idx", "_cur_start")

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self._first = 0          # index of the first live chunk in _chunks
        self._head = 0           # bytes of the first live chunk already consumed
        self._len = 0            # live bytes
        self._cur_idx = 0        # cursor: a chunk index ...
        self._cur_start = 0      # ... and the buffer offset where that chunk's live part starts

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        if type(data) is not bytes and not (type(data) is memoryview and data.readonly):
            data = bytes(data)          # a read-only view is kept: its owner never rewrites it
        chunks = self._chunks
        if n < _MERGE_BELOW and len(chunks) > self._first and len(chunks[-1]) < _MERGE_BELOW:
            last = len(chunks) - 1
            if last == self._first and self._head:
                chunks[last] = bytes(chunks[last][self._head:]) + data
                self._head = 0
            else:
                chunks[last] = bytes(chunks[last]) + data
            if self._cur_idx > last:
                self._cur_idx, self._cur_start = self._first, 0
        else:
            chunks.append(data)
        self._len += n

    def consume(self, n: int) -> None:
        """Drop the first `n` bytes (acknowledged)."""
        if n <= 0:
            return
        if n >= self._len:
            self.clear()
            return
        self._len -= n
        chunks = self._chunks
        i = self._first
        head = self._head + n
        while head >= len(chunks[i]):
            head -= len(chunks[i])
            chunks[i] = b""
            i += 1
        self._first = i
        self._head = head
        if i > 64 and i * 2 > len(chunks):
            del chunks[:i]
            i = self._first = 0
        self._cur_idx, self._cur_start = i, 0

    def clear(self) -> None:
        self._chunks = []
        self._first = self._head = self._len = 0
        self._cur_idx = self._cur_start = 0

    def get(self, offset: int, n: int) -> Chunk | Gather:
        """`n` bytes from `offset` (0 = the first unacknowledged byte): bytes or a memoryview
        inside one chunk, a `Gather` across chunks."""
        if n <= 0:
            return b""
        chunks = self._chunks
        # find the chunk holding `offset`, from the cursor when it is not past it
        if offset >= self._cur_start and self._cur_idx < len(chunks):
            i, start = self._cur_idx, self._cur_start
        else:
            i, start = self._first, 0
        while True:
            c = chunks[i]
            clen = len(c) - (self._head if i == self._first else 0)
            if offset < start + clen:
                break
            start += clen
            i += 1
        self._cur_idx, self._cur_start = i, start
        skip = offset - start + (self._head if i == self._first else 0)
        c = chunks[i]
        if skip + n <= len(c):
            if skip == 0 and n == len(c):
                return c
            return memoryview(c)[skip:skip + n]
        parts = [memoryview(c)[skip:]]
        left = n - (len(c) - skip)
        i += 1
        while left > 0:
            c = chunks[i]
            parts.append(memoryview(c)[:left])
            left -= len(c)
            i += 1
        return Gather(parts, n)
