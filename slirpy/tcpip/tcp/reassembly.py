"""Out-of-order reassembly: data the peer sent beyond a hole, kept until the hole fills.

In-order data never comes here (the connection hands it over zero-copy); what does is copied,
because the frame buffer it arrived in is reused. The queue is bounded by the advertised
window (the connection trims to it) and by `OOO_MAX_SEGMENTS` entries; what does not fit is
dropped and the peer resends it. The queue also describes itself as SACK blocks (RFC 2018),
the most recently reported ones first, so that with more holes than four blocks can describe,
each block is repeated in a few ACKs (one may be lost) before newer ones push it out.
"""

from __future__ import annotations

from ..seqnum import seq_add, seq_le, seq_lt, seq_sub

OOO_MAX_SEGMENTS = 256        # out-of-order entries kept; more are dropped (the peer resends)
SACK_MAX_BLOCKS = 4           # what fits the 40 option bytes without timestamps
SACK_MAX_BLOCKS_TS = 3        # beside the 12 bytes of the timestamps option (RFC 2018 §3)


class ReassemblyQueue:
    """Non-overlapping (sequence number, bytes) entries, ordered from RCV.NXT."""

    __slots__ = ("_entries", "_reported")

    def __init__(self) -> None:
        self._entries: list[tuple[int, bytes]] = []
        # A sequence number inside each block last reported, most recent first (at most
        # SACK_MAX_BLOCKS; a block is found again by one of its bytes after it has grown).
        self._reported: list[int] = []

    def __len__(self) -> int:
        return len(self._entries)

    def insert(self, rcv_nxt: int, start: int, payload: bytes | memoryview) -> None:
        """Queue [start, start+len) (offsets from RCV.NXT) minus what is already queued."""
        end = start + len(payload)
        q = self._entries
        pieces = []
        cur = start
        for s, d in q:
            so = seq_sub(s, rcv_nxt)
            eo = so + len(d)
            if eo <= cur:
                continue
            if so >= end:
                break
            if so > cur:
                pieces.append((cur, so))
            cur = eo
            if cur >= end:
                break
        if cur < end:
            pieces.append((cur, end))
        if not pieces or len(q) + len(pieces) > OOO_MAX_SEGMENTS:
            return
        mv = memoryview(payload)
        for a, b in pieces:
            q.append((seq_add(rcv_nxt, a), mv[a - start:b - start].tobytes()))   # a copy: frames are reused
        q.sort(key=lambda e: seq_sub(e[0], rcv_nxt))

    def drain(self, rcv_nxt: int) -> tuple[list[bytes | memoryview], int]:
        """Take the entries that now continue the stream at `rcv_nxt` (trimmed where they
        overlap it); return them and the new RCV.NXT."""
        q = self._entries
        ready: list[bytes | memoryview] = []
        while q:
            s, d = q[0]
            off = seq_sub(s, rcv_nxt)
            if off > 0:
                break
            q.pop(0)
            n = len(d) + off
            if n <= 0:
                continue
            ready.append(memoryview(d)[-off:] if off < 0 else d)
            rcv_nxt = seq_add(rcv_nxt, n)
        return ready, rcv_nxt

    def sack_blocks(self, last: int, limit: int = SACK_MAX_BLOCKS) -> tuple[tuple[int, int], ...]:
        """At most `limit` SACK blocks (RFC 2018 §4; four, or three beside timestamps): first
        the one holding `last` (the most recent arrival), then the blocks most recently
        reported that are still held, then the others, lowest first."""
        blocks: list[list[int]] = []
        for s, d in self._entries:
            e = seq_add(s, len(d))
            if blocks and blocks[-1][1] == s:
                blocks[-1][1] = e
            else:
                blocks.append([s, e])
        chosen: list[int] = []
        for seq in (last, *self._reported):
            for i, (s, e) in enumerate(blocks):
                if seq_le(s, seq) and seq_lt(seq, e):
                    if i not in chosen:
                        chosen.append(i)
                    break
            if len(chosen) == limit:
                break
        for i in range(len(blocks)):
            if len(chosen) == limit:
                break
            if i not in chosen:
                chosen.append(i)
        self._reported = [blocks[i][0] for i in chosen]
        return tuple((blocks[i][0], blocks[i][1]) for i in chosen)
