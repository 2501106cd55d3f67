"""A deterministic fault injector between the TAP and the `Stack`: ``--impair``.

This kernel has no netem, and a TAP is a lossless memory-to-memory link, so this is how
slirpy's recovery paths are exercised and how a user reproduces a bad Wi-Fi link:

    --impair loss=5%,reorder=5%,dup=1%,corrupt=0.1%,delay=20,seed=7

Theory of operation
-------------------
`Impairment` sits on both directions: ``guest_to_stack(frame, now)`` for frames read from the
TAP, ``stack_to_guest(frame, now)`` for frames the stack emits. Each returns the frames to
pass on *now* (none when the frame is lost or held back, two when it is duplicated); frames
held back come out later from ``due(now)``, and ``next_deadline()`` says when. It does no I/O
and reads no clock: time is the caller's ``now``, randomness a `random.Random` per direction
seeded from ``seed``, so one seed and one input sequence give the same output every time (and
traffic in one direction does not change the fate of frames in the other).

Per frame, in this order, each with its own probability:

* ``loss``: the frame is dropped.
* ``corrupt``: one bit is flipped in the area after the Ethernet header and the first 20 bytes
  of the IP header (after the virtio header too, when there is one): the transport header or
  payload, where a real link's damage that slipped past the Ethernet FCS would show. Frames
  too short to have such an area are passed on intact (``corrupt.skipped``).
  **Offloads:** a frame marked NEEDS_CSUM (every GSO super-frame, and everything the stack
  sends with offloads on) carries only a partial checksum that the receiver's kernel
  completes, so *nobody verifies it*: the damage reaches the application. Those corruptions
  are counted apart (``corrupt.unverified``). Corruption tests checksum handling only without
  offloads (``--no-offload``); with offloads it models memory corruption, not a link.
* ``dup``: the frame is passed on twice.
* ``reorder``: the frame is held back and released right after the next frame of the same
  direction is passed on (so the two swap places), or after `REORDER_HOLD` seconds if no other
  frame comes.
* ``delay``: every frame that is passed on waits ``delay`` milliseconds (order kept).

Frames are ``bytes`` or, from the stack, tuples of buffers (``os.writev`` parts); a frame
that is corrupted is joined into one ``bytes``, anything else passes through untouched. A
held frame that is not ``bytes`` (a memoryview/bytearray the caller may reuse) is copied.

Bounded: at most ``limit`` frames are held per direction (delayed plus reordered); beyond
that a frame is dropped and counted (``drop.overflow``).

Counters go to a dict (the stack's own when wired by the runtime, so ``slirpy stats``
shows them): ``impair.<direction>.<what>`` with direction ``to_stack`` / ``to_guest`` and what
``frames loss corrupt corrupt.unverified corrupt.skipped dup reorder delayed drop.overflow``.

`ImpairedLink(stack, impairment)` is a filter on the link: the runtime reads the TAP into it
and writes to the TAP what it returns; the Stack behind it is untouched (DESIGN.md §2: filters
wrap the device, not the Stack; packet capture will be another such filter).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Protocol

from .tcpip.iface.link import Frame
from .tcpip.wire.virtio import F_NEEDS_CSUM, VNET_HDR_LEN

ETH_IP_HLEN = 14 + 20            # corruption starts after these (and after the virtio header)
REORDER_HOLD = 0.010             # seconds a reordered frame waits for a successor at most
DEFAULT_LIMIT = 4096             # frames held per direction
DELAY_MAX_MS = 60_000.0
LIMIT_MAX = 1 << 20
SEED_MAX = (1 << 64) - 1

_PERCENT_FIELDS = ("loss", "reorder", "dup", "corrupt")


@dataclass(frozen=True)
class ImpairSpec:
    """Probabilities in percent (0..100), delay in milliseconds, the RNG seed, the bound."""

    loss: float = 0.0
    reorder: float = 0.0
    dup: float = 0.0
    corrupt: float = 0.0
    delay: float = 0.0
    seed: int = 0
    limit: int = DEFAULT_LIMIT

    @property
    def active(self) -> bool:
        """Whether any frame can be affected at all."""
        return any((self.loss, self.reorder, self.dup, self.corrupt, self.delay))

    def __str__(self) -> str:
        parts = [f"{f}={getattr(self, f):g}%" for f in _PERCENT_FIELDS]
        parts += [f"delay={self.delay:g}", f"seed={self.seed}", f"limit={self.limit}"]
        return ",".join(parts)


_FIELD_NAMES = tuple(f.name for f in fields(ImpairSpec))


def _parse_number(name: str, text: str, lo: float, hi: float, unit: str) -> float:
    if unit and text.endswith(unit):
        text = text[: -len(unit)]
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:            # also rejects nan and inf
        suffix = unit if unit else ""
        raise ValueError(f"impair: invalid {name} {text!r}: must be a number from {lo:g}{suffix} "
                         f"to {hi:g}{suffix}")
    return value


def _parse_int(name: str, text: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ValueError(f"impair: invalid {name} {text!r}: must be an integer from {lo} to {hi}")
    return value


def parse_impair(spec: str) -> ImpairSpec:
    """``"loss=5%,reorder=5%,dup=1%,corrupt=0.1%,delay=20,seed=7"`` -> `ImpairSpec`.

    Percentages may omit the ``%``; ``delay`` is in milliseconds (``ms`` suffix allowed);
    ``limit`` bounds the frames held per direction. Raises ValueError with a one-line message
    naming the bad field and its range.
    """
    values: dict = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, text = item.partition("=")
        name = name.strip().lower()
        text = text.strip()
        if not sep or not text:
            raise ValueError(f"impair: expected name=value, got {item!r} "
                             f"(names: {', '.join(_FIELD_NAMES)})")
        if name not in _FIELD_NAMES:
            raise ValueError(f"impair: unknown field {name!r} (names: {', '.join(_FIELD_NAMES)})")
        if name in values:
            raise ValueError(f"impair: {name} given twice")
        if name in _PERCENT_FIELDS:
            values[name] = _parse_number(name, text, 0.0, 100.0, "%")
        elif name == "delay":
            values[name] = _parse_number(name, text, 0.0, DELAY_MAX_MS, "ms")
        elif name == "seed":
            values[name] = _parse_int(name, text, 0, SEED_MAX)
        else:
            values[name] = _parse_int(name, text, 1, LIMIT_MAX)
    return ImpairSpec(**values)


def _flat(frame: Frame) -> bytes:
    return frame if type(frame) is bytes else b"".join(frame) if type(frame) is tuple else bytes(frame)


class _Direction:
    """The state of one direction: its RNG, the delay line and the reorder hold."""

    __slots__ = ("rng", "delayed", "held", "prefix", "c_frames", "c_loss", "c_corrupt",
                 "c_unverified", "c_skipped", "c_dup", "c_reorder", "c_delayed", "c_overflow")

    def __init__(self, seed: int, name: str):
        self.rng = random.Random(seed)
        self.delayed: deque = deque()      # (release_at, frame), release times non-decreasing
        self.held: deque = deque()         # (release_at, frame) waiting for a successor
        p = f"impair.{name}."
        self.c_frames = p + "frames"
        self.c_loss = p + "loss"
        self.c_corrupt = p + "corrupt"
        self.c_unverified = p + "corrupt.unverified"
        self.c_skipped = p + "corrupt.skipped"
        self.c_dup = p + "dup"
        self.c_reorder = p + "reorder"
        self.c_delayed = p + "delayed"
        self.c_overflow = p + "drop.overflow"


class Impairment:
    """The fault injector; see the module docstring."""

    def __init__(self, spec: ImpairSpec, *, vnet_hdr: bool = False, counters: dict | None = None):
        self.spec = spec
        self.vnet_hdr = vnet_hdr
        self.counters = counters if counters is not None else {}
        self._p_loss = spec.loss / 100.0
        self._p_reorder = spec.reorder / 100.0
        self._p_dup = spec.dup / 100.0
        self._p_corrupt = spec.corrupt / 100.0
        self._delay = spec.delay / 1000.0
        self._limit = spec.limit
        self._corrupt_from = ETH_IP_HLEN + (VNET_HDR_LEN if vnet_hdr else 0)
        # Two independent streams derived from one seed (a string seed hashes deterministically).
        self._to_stack = _Direction(hash_seed(spec.seed, "to_stack"), "to_stack")
        self._to_guest = _Direction(hash_seed(spec.seed, "to_guest"), "to_guest")

    # ------------------------------------------------------------------ inputs

    def guest_to_stack(self, frame: Frame, now: float) -> list[Frame]:
        """A frame read from the TAP: the frames to give the stack now."""
        return self._frame(self._to_stack, frame, now)

    def stack_to_guest(self, frame: Frame, now: float) -> list[Frame]:
        """A frame from the stack (bytes or a tuple of buffers): the frames to write now."""
        return self._frame(self._to_guest, frame, now)

    def due(self, now: float) -> tuple[list, list]:
        """Held frames whose time has come: (to_stack, to_guest)."""
        return self._release(self._to_stack, now), self._release(self._to_guest, now)

    def next_deadline(self) -> float | None:
        best = None
        for d in (self._to_stack, self._to_guest):
            for q in (d.delayed, d.held):
                if q and (best is None or q[0][0] < best):
                    best = q[0][0]
        return best

    def held(self) -> int:
        """Frames held back in both directions."""
        return sum(len(d.delayed) + len(d.held) for d in (self._to_stack, self._to_guest))

    # ------------------------------------------------------------------ the work

    def _frame(self, d: _Direction, frame: Frame, now: float) -> list[Frame]:
        c = self.counters
        c[d.c_frames] = c.get(d.c_frames, 0) + 1
        rng = d.rng.random
        out: list = []
        if rng() < self._p_loss:
            c[d.c_loss] = c.get(d.c_loss, 0) + 1
        else:
            if self._p_corrupt and rng() < self._p_corrupt:
                frame = self._corrupt(d, frame)
            copies = 1
            if self._p_dup and rng() < self._p_dup:
                c[d.c_dup] = c.get(d.c_dup, 0) + 1
                copies = 2
            if self._p_reorder and rng() < self._p_reorder:
                # Hold it back; it follows the next frame that is passed on.
                c[d.c_reorder] = c.get(d.c_reorder, 0) + copies
                for _ in range(copies):
                    self._hold(d, d.held, now + REORDER_HOLD + self._delay, frame)
                return out
            for _ in range(copies):
                self._pass(d, out, frame, now)
        # Any frame's arrival is "the next one" for frames held for reordering.
        held = d.held
        while held:
            _, f = held.popleft()
            self._pass(d, out, f, now)
        return out

    def _pass(self, d: _Direction, out: list[Frame], frame: Frame, now: float) -> None:
        if self._delay:
            self._hold(d, d.delayed, now + self._delay, frame)
            self.counters[d.c_delayed] = self.counters.get(d.c_delayed, 0) + 1
        else:
            out.append(frame)

    def _hold(self, d: _Direction, q: deque[tuple[float, Frame]], at: float, frame: Frame) -> None:
        if len(d.delayed) + len(d.held) >= self._limit:
            self.counters[d.c_overflow] = self.counters.get(d.c_overflow, 0) + 1
            return
        if type(frame) is not bytes and type(frame) is not tuple:
            frame = bytes(frame)                # the caller may reuse its buffer
        elif type(frame) is tuple:
            frame = tuple(p if type(p) is bytes else bytes(p) for p in frame)
        q.append((at, frame))

    def _release(self, d: _Direction, now: float) -> list:
        out: list = []
        delayed = d.delayed
        while delayed and delayed[0][0] <= now:
            out.append(delayed.popleft()[1])
        held = d.held
        while held and held[0][0] <= now:
            # The reorder hold (which includes `delay`) expired without a successor.
            out.append(held.popleft()[1])
        return out

    def _corrupt(self, d: _Direction, frame: Frame) -> Frame:
        c = self.counters
        buf = _flat(frame)
        start = self._corrupt_from
        if len(buf) <= start:
            c[d.c_skipped] = c.get(d.c_skipped, 0) + 1
            return frame
        c[d.c_corrupt] = c.get(d.c_corrupt, 0) + 1
        if self.vnet_hdr and buf[0] & F_NEEDS_CSUM:
            c[d.c_unverified] = c.get(d.c_unverified, 0) + 1
        rng = d.rng
        pos = rng.randrange(start, len(buf))
        b = bytearray(buf)
        b[pos] ^= 1 << rng.randrange(8)
        return bytes(b)


def hash_seed(seed: int, salt: str) -> int:
    """A per-direction seed derived from the user's, stable across runs and Python versions."""
    h = 0xCBF29CE484222325
    for byte in seed.to_bytes(8, "little") + salt.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class FrameLink(Protocol):
    """What the runtime moves frames through: the Stack itself, or filters wrapping it."""

    def receive_frame(self, frame: Any, now: float) -> None: ...

    def frames_to_send(self, now: float) -> list[Any]: ...

    def next_deadline(self) -> float | None: ...


class ImpairedLink:
    """A link filter: an `Impairment` between the TAP and `inner` (the Stack, or another filter).

    The runtime reads the TAP into ``receive_frame`` and writes what ``frames_to_send`` returns,
    whichever link it holds; nothing else of the Stack goes through here (host-side inputs and
    events go to the Stack directly). Frames held back re-enter through ``frames_to_send`` (the
    runtime calls it after every input and after the timer), and ``next_deadline`` includes
    the impairment's deadline, so the runtime's one timer covers both.
    """

    def __init__(self, inner: FrameLink, impairment: Impairment):
        self.inner = inner
        self.impairment = impairment

    def receive_frame(self, frame: Any, now: float) -> None:
        receive = self.inner.receive_frame
        for f in self.impairment.guest_to_stack(frame, now):
            receive(f, now)

    def frames_to_send(self, now: float) -> list[Any]:
        imp = self.impairment
        to_stack, out = imp.due(now)
        inner = self.inner
        for f in to_stack:
            inner.receive_frame(f, now)
        impair = imp.stack_to_guest
        for f in inner.frames_to_send(now):
            out.extend(impair(f, now))
        return out

    def next_deadline(self) -> float | None:
        a = self.inner.next_deadline()
        b = self.impairment.next_deadline()
        if a is None:
            return b
        if b is None:
            return a
        return a if a < b else b
