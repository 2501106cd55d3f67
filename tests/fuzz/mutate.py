"""A seeded mutation fuzzer in pure Python (the default engine; atheris is optional).

`Mutator(corpus, seed).next()` returns a new input: a corpus entry (sometimes random bytes)
with one to a few mutations, chosen for what breaks packet parsers -- bit flips, interesting
byte and 16-bit values written anywhere (length-field smashing, both byte orders, with the
input's own length and near-misses of it), header-nibble smashing (IHL, data offset), byte
insertions and deletions, truncation, extension, duplicated ranges, and splices of two corpus
entries. Everything comes from one `random.Random(seed)`: the same seed and corpus give the
same inputs, so any finding replays from (harness, seed, index).
"""

from __future__ import annotations

import random

INTERESTING_8 = (0, 1, 2, 4, 5, 6, 15, 16, 17, 20, 0x40, 0x45, 0x4F, 0x50, 0x7F, 0x80, 0xF0, 0xFF)
INTERESTING_16 = (0, 1, 2, 4, 8, 19, 20, 21, 28, 39, 40, 59, 60, 64, 127, 128, 255, 256, 512,
                  1460, 1500, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)


class Mutator:
    def __init__(self, corpus: list[bytes], seed: int, max_len: int = 70_000):
        if not corpus:
            corpus = [bytes(64)]
        self.corpus = corpus
        self.rng = random.Random(seed)
        self.max_len = max_len
        self._ops = (
            self._flip_bit, self._flip_bit, self._set_byte, self._set_u16, self._set_u16,
            self._smash_nibble, self._insert, self._delete, self._truncate, self._extend,
            self._duplicate, self._splice, self._random_byte,
        )

    def next(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.02:
            return rng.randbytes(rng.randrange(0, 128))
        buf = bytearray(rng.choice(self.corpus))
        if r < 0.06:
            return bytes(buf)                       # unmutated: the valid paths stay exercised
        n = 1
        while n < 8 and rng.random() < 0.45:
            n += 1
        ops = self._ops
        for _ in range(n):
            rng.choice(ops)(buf)
        if len(buf) > self.max_len:
            del buf[self.max_len:]
        return bytes(buf)

    # ---------------------------------------------------------------- positions

    def _pos(self, buf: bytearray, width: int = 1) -> int:
        """A position, biased towards the headers at the front."""
        n = len(buf) - width + 1
        if n <= 0:
            return -1
        rng = self.rng
        if rng.random() < 0.7:
            return rng.randrange(min(n, 80))
        return rng.randrange(n)

    # ---------------------------------------------------------------- operations

    def _flip_bit(self, buf):
        i = self._pos(buf)
        if i >= 0:
            buf[i] ^= 1 << self.rng.randrange(8)

    def _random_byte(self, buf):
        i = self._pos(buf)
        if i >= 0:
            buf[i] = self.rng.randrange(256)

    def _set_byte(self, buf):
        i = self._pos(buf)
        if i >= 0:
            buf[i] = self.rng.choice(INTERESTING_8)

    def _set_u16(self, buf):
        i = self._pos(buf, 2)
        if i < 0:
            return
        rng = self.rng
        n = len(buf)
        v = rng.choice(INTERESTING_16 + (n, n - 1, n + 1, n - 12, n - 14, n - 26, n - 34, n - 46))
        v &= 0xFFFF
        buf[i:i + 2] = v.to_bytes(2, "big" if rng.random() < 0.75 else "little")

    def _smash_nibble(self, buf):
        i = self._pos(buf)
        if i >= 0:
            v = self.rng.randrange(16)
            buf[i] = (buf[i] & 0x0F) | v << 4 if self.rng.random() < 0.5 else (buf[i] & 0xF0) | v

    def _insert(self, buf):
        i = self.rng.randrange(len(buf) + 1)
        buf[i:i] = self.rng.randbytes(self.rng.choice((1, 1, 2, 4, 8, 16, 40)))

    def _delete(self, buf):
        if buf:
            i = self.rng.randrange(len(buf))
            del buf[i:i + self.rng.choice((1, 1, 2, 4, 8, 20))]

    def _truncate(self, buf):
        if buf:
            del buf[self.rng.randrange(len(buf)):]

    def _extend(self, buf):
        buf += self.rng.randbytes(self.rng.choice((1, 4, 16, 64, 600)))

    def _duplicate(self, buf):
        if buf:
            i = self.rng.randrange(len(buf))
            j = min(len(buf), i + self.rng.choice((2, 4, 8, 40)))
            k = self.rng.randrange(len(buf) + 1)
            buf[k:k] = buf[i:j]

    def _splice(self, buf):
        other = self.rng.choice(self.corpus)
        if not buf or not other:
            return
        i = self.rng.randrange(len(buf))
        j = self.rng.randrange(len(other))
        buf[i:] = other[j:]
