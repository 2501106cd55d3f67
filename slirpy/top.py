"""The live flow view: `slirpy flows --watch` (alias `slirpy top`).

Why a module of its own: `slirpy flows` prints the table once, but a user chasing a stuck or
slow connection wants what `iftop` or `watch conntrack -L` give: the table refreshed in place,
each flow's throughput, the busiest first. The sandbox keeps only byte counters (the API's
`flows` rows); the rates are computed here, on the client, from two polls one interval apart.

Layout of the module: the pure half (rows in, lines out: rate computation, sorting, number
formatting, the width-dependent choice of columns, the frame's bytes) is unit-tested without a
terminal; the impure half (`watch`, `snapshot`) polls the API socket and drives the terminal:
the alternate screen, one write per frame (cursor home, each line then erase-to-end-of-line,
never a clear of the whole screen, so nothing flickers), no echo of typed keys, the size re-read
at every frame and a redraw on SIGWINCH, and the terminal restored however the loop ends.
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import termios
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from .api import ApiError, request

# ------------------------------------------------------------------ rates (pure)

RowKey = tuple[Any, Any, Any, Any]


def row_key(row: dict) -> RowKey:
    """What identifies a flow across polls: its id (never reused by one sandbox) plus its
    endpoints, so that another sandbox serving the same socket path, whose ids restart at 1,
    never has its flows matched with the old ones."""
    return (row.get("id"), row.get("proto"), row.get("guest"), row.get("host"))


def row_bytes(row: dict) -> tuple[int, int] | None:
    """(to host, to guest) payload bytes of a row; None when the row has no byte counters
    (an older sandbox's UDP/ICMP rows count datagrams only)."""
    if "bytes_to_host" in row:
        return int(row["bytes_to_host"]), int(row["bytes_to_guest"])
    if row.get("unit") == "bytes":
        return int(row["to_host"]), int(row["to_guest"])
    return None


@dataclass(frozen=True)
class RatedFlow:
    row: dict
    to_host: float | None       # bytes/s guest -> host since the previous poll; None: unknown
    to_guest: float | None      # bytes/s host -> guest

    @property
    def rate(self) -> float:
        return (self.to_host or 0.0) + (self.to_guest or 0.0)

    @property
    def total(self) -> int:
        b = row_bytes(self.row)
        return 0 if b is None else b[0] + b[1]


AGE_SLACK = 0.1         # the API rounds ages to 0.1 s


def compute_rates(prev: list[dict] | None, cur: list[dict], dt: float) -> list[RatedFlow]:
    """Per-flow rates from two polls `dt` seconds apart (`prev` None: the first poll).

    A row of `cur` is matched with the row of `prev` with the same `row_key`; its rate is the
    counters' growth over `dt`. A flow that is not in `prev`, or whose counters went down (not
    the same flow any more), counts from zero if it is younger than `dt` (it opened since the
    previous poll, so all its bytes moved in the interval), else its rate is unknown (None)
    for this poll. Flows of `prev` missing from `cur` have ended and are not shown."""
    before = {row_key(r): row_bytes(r) for r in prev} if prev is not None else {}
    out = []
    for row in cur:
        now_b = row_bytes(row)
        if now_b is None or prev is None or dt <= 0:
            out.append(RatedFlow(row, None, None))
            continue
        base = before.get(row_key(row))
        if base is None or now_b[0] < base[0] or now_b[1] < base[1]:
            young = float(row.get("age", dt + AGE_SLACK + 1)) <= dt + AGE_SLACK
            base = (0, 0) if young else None
        if base is None:
            out.append(RatedFlow(row, None, None))
        else:
            out.append(RatedFlow(row, (now_b[0] - base[0]) / dt, (now_b[1] - base[1]) / dt))
    return out


def sort_flows(flows: list[RatedFlow]) -> list[RatedFlow]:
    """Highest rate first (both directions together); ties by total bytes, then oldest first,
    then id, so that idle flows keep a stable order from frame to frame."""
    return sorted(flows, key=lambda f: (-f.rate, -f.total, -float(f.row.get("age", 0)),
                                        str(f.row.get("id", ""))))


# ------------------------------------------------------------------ numbers (pure)

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: float) -> str:
    """Binary units, three significant digits, at most 8 characters: 0 B, 1023 B, 1.50 KiB,
    15.0 KiB, 999 KiB, 0.98 MiB."""
    if n < 1024:
        return f"{int(round(n))} B"
    value = float(n)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 999.5 or unit == _UNITS[-1]:
            if value < 9.995:
                return f"{value:.2f} {unit}"
            if value < 99.95:
                return f"{value:.1f} {unit}"
            return f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def format_rate(rate: float | None) -> str:
    """A rate in bytes/s ("-": unknown for this poll)."""
    return "-" if rate is None else format_bytes(rate) + "/s"


def format_age(seconds: float) -> str:
    """45s, 3m07s, 2h05m, 3d04h: at most 6 characters up to 99 days."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clip_left(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut on the left ("~" marks the cut): an
    endpoint keeps its port and the end of its address."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[-width:] if width > 0 else ""
    return "~" + text[len(text) - width + 1:]


# ------------------------------------------------------------------ layout (pure)


@dataclass(frozen=True)
class Column:
    name: str
    title: str
    right: bool                             # right-aligned
    cell: Callable[[RatedFlow], str]
    fixed: int = 0                          # width; 0: as wide as its widest cell
    shrink_to: int = 0                      # an endpoint: may be clipped down to this


COLUMNS = (
    Column("proto", "PROTO", False, lambda f: str(f.row.get("proto", "")), 5),
    Column("dir", "DIR", False, lambda f: str(f.row.get("direction", "")), 3),
    Column("guest", "GUEST", False, lambda f: str(f.row.get("guest", "")), 0, 12),
    Column("host", "HOST", False, lambda f: str(f.row.get("host", "")), 0, 12),
    Column("state", "STATE", False, lambda f: str(f.row.get("state", ""))),
    Column("to_host", "TO-HOST/s", True, lambda f: format_rate(f.to_host), 10),
    Column("to_guest", "TO-GUEST/s", True, lambda f: format_rate(f.to_guest), 10),
    Column("total", "TOTAL", True, lambda f: format_bytes(f.total) if row_bytes(f.row) else "-",
           8),
    Column("age", "AGE", True, lambda f: format_age(float(f.row.get("age", 0))), 6),
)

# On a narrow terminal, columns go in this order until the rest fits; then the endpoints are
# clipped (host first); the protocol, the endpoints and the two rates always stay.
DROP_ORDER = ("dir", "age", "total", "state")
GAP = 1


def choose_columns(width: int, flows: list[RatedFlow]) -> list[tuple[Column, int]]:
    """The columns shown at this terminal width, each with its width (pure)."""
    widths = {c.name: c.fixed or max([len(c.title)] + [len(c.cell(f)) for f in flows])
              for c in COLUMNS}
    shown = [c for c in COLUMNS]

    def used() -> int:
        return sum(widths[c.name] for c in shown) + GAP * (len(shown) - 1)

    for name in DROP_ORDER:
        if used() <= width:
            break
        shown = [c for c in shown if c.name != name]
    for c in [c for c in shown if c.shrink_to][::-1]:        # host first, then guest
        excess = used() - width
        if excess > 0:
            widths[c.name] = max(c.shrink_to, widths[c.name] - excess)
    return [(c, widths[c.name]) for c in shown]


def format_line(cells: list[tuple[Column, int, str]], width: int) -> str:
    parts = []
    for c, w, text in cells:
        text = clip_left(text, w)
        parts.append(text.rjust(w) if c.right else text.ljust(w))
    return (" " * GAP).join(parts).rstrip()[:width]


def header_line(stats: dict, flows: list[RatedFlow], interval: float, width: int) -> str:
    """Totals: flows by protocol (from `stats`), the sum of the known rates each way. Parts are
    kept by importance while they fit, and shown in their natural order."""
    f = stats.get("flows", {})
    up = sum(x.to_host for x in flows if x.to_host is not None)
    down = sum(x.to_guest for x in flows if x.to_guest is not None)
    parts = [  # (importance, text): 0 is kept first
        (0, f"tcp {f.get('tcp', 0)} udp {f.get('udp', 0)} icmp {f.get('icmp_echo', 0)}"),
        (3, f"(half-open {f.get('tcp_half_open', 0)}, time-wait {f.get('tcp_time_wait', 0)})"),
        (1, f"to-host {format_rate(up)}"),
        (2, f"to-guest {format_rate(down)}"),
        (4, f"interval {interval:g}s"),
    ]
    keep: set[int] = set()
    for rank, text in sorted(parts):
        trial = "  ".join(t for r, t in parts if r in keep or r == rank)
        if len(trial) <= width:
            keep.add(rank)
    return "  ".join(t for r, t in parts if r in keep)[:width]


def render(stats: dict, flows: list[RatedFlow], width: int, height: int | None,
           interval: float) -> list[str]:
    """One frame: a header line with the totals, the column titles, then one line per flow
    (sorted), every line at most `width` characters and at most `height` lines (None: all)."""
    flows = sort_flows(flows)
    cols = choose_columns(width, flows)
    lines = [header_line(stats, flows, interval, width),
             format_line([(c, w, c.title) for c, w in cols], width)]
    room = None if height is None else max(0, height - len(lines))
    shown = flows if room is None or len(flows) <= room else flows[:max(0, room - 1)]
    lines += [format_line([(c, w, c.cell(f)) for c, w in cols], width) for f in shown]
    if len(shown) < len(flows) and room:
        lines.append(f"... {len(flows) - len(shown)} more"[:width])
    return lines if height is None else lines[:max(0, height)]


# ------------------------------------------------------------------ terminal bytes (pure)

ENTER = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J"     # alternate screen, cursor hidden, cleared
LEAVE = "\x1b[?25h\x1b[?1049l"                  # cursor shown, normal screen back
HOME = "\x1b[H"
EL = "\x1b[K"                                    # erase to end of line
ED = "\x1b[J"                                    # erase to end of screen


def frame_text(lines: list[str], width: int, height: int) -> str:
    """The bytes that paint `lines` over the previous frame: cursor home, each line followed by
    erase-to-end-of-line, then erase below. A line that fills the width gets no erase (the
    cursor sits on its last cell, which the erase would take), and nothing ever wraps."""
    lines = [ln[:width] for ln in lines[:height]]
    out = [HOME]
    for i, ln in enumerate(lines):
        if i:
            out.append("\r\n")
        out.append(ln if len(ln) >= width else ln + EL)
    if len(lines) < height:
        out.append("\r\n" + ED if lines else ED)
    return "".join(out)


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_escapes(text: str) -> str:
    return _ESCAPE.sub("", text)


# ------------------------------------------------------------------ polling


class SandboxGone(Exception):
    """The API socket stopped answering: the sandbox has exited (or never ran)."""


def poll(path: str) -> tuple[float, dict, list[dict]]:
    """(monotonic time, stats, flow rows) from the API socket; SandboxGone if it is gone."""
    try:
        stats = request(path, {"execute": "stats"}, timeout=5.0)
        t = time.monotonic()
        rows = request(path, {"execute": "flows"}, timeout=5.0)
    except OSError as e:
        raise SandboxGone(f"API socket {path}: {e.strerror or e} (has the sandbox exited?)") from None
    except ApiError as e:
        raise SandboxGone(f"API socket {path}: {e}") from None
    for reply in (stats, rows):
        if not isinstance(reply, dict) or "return" not in reply:
            raise SandboxGone(f"API socket {path}: unexpected reply {str(reply)[:100]}")
    return t, stats["return"], rows["return"].get("flows", [])


def snapshot(path: str, interval: float, out: IO[str]) -> int:
    """stdout is not a terminal: two polls `interval` apart, one table, every column."""
    try:
        t0, _, rows0 = poll(path)
        time.sleep(interval)
        t1, stats, rows1 = poll(path)
    except SandboxGone as e:
        sys.stderr.write(f"slirpy: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    for line in render(stats, compute_rates(rows0, rows1, t1 - t0), 10_000, None, interval):
        out.write(line + "\n")
    out.flush()
    return 0


# ------------------------------------------------------------------ the terminal


@contextmanager
def terminal(out_fd: int, in_fd: int | None) -> Iterator[int]:
    """The alternate screen, no echo and no line buffering on the keyboard (Ctrl-C still
    interrupts), SIGWINCH waking the loop; everything restored on the way out. Yields the read
    end of the wake-up pipe."""
    saved = termios.tcgetattr(in_fd) if in_fd is not None else None
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wake = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    old_winch = signal.signal(signal.SIGWINCH, lambda *_: None)
    # Ctrl-C must end the view even if SIGINT came in ignored (a shell's background job);
    # `kill` too, with the terminal restored on the way out (status 143, as a shell shows it).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    old_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        if in_fd is not None and saved is not None:
            quiet = termios.tcgetattr(in_fd)
            quiet[3] &= ~(termios.ECHO | termios.ICANON)
            quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 0, 0
            termios.tcsetattr(in_fd, termios.TCSANOW, quiet)
        _write(out_fd, ENTER)
        yield wake_r
    finally:
        _write(out_fd, LEAVE)
        if in_fd is not None and saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGWINCH, old_winch)
        signal.set_wakeup_fd(old_wake)
        os.close(wake_r)
        os.close(wake_w)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _write(fd: int, text: str) -> None:
    """All of `text`: a write to a terminal may stop short when a signal comes in."""
    data = memoryview(text.encode())
    while data:
        data = data[os.write(fd, data):]


def _wait(deadline: float, wake_r: int, in_fd: int | None) -> str:
    """Sleep until `deadline`: "poll" then, "resize" on SIGWINCH, "quit" on a q key."""
    fds = [wake_r] + ([in_fd] if in_fd is not None else [])
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "poll"
        ready, _, _ = select.select(fds, [], [], left)
        if wake_r in ready:
            sigs = os.read(wake_r, 512)
            if signal.SIGWINCH in sigs:
                return "resize"
        if in_fd is not None and in_fd in ready:
            try:
                keys = os.read(in_fd, 64)
            except OSError:             # the terminal is gone
                return "quit"
            if not keys or b"q" in keys or b"Q" in keys:
                return "quit"


def _draw(out_fd: int, stats: dict, flows: list[RatedFlow], interval: float) -> None:
    size = os.get_terminal_size(out_fd)
    width, height = size.columns or 80, size.lines or 24        # 0: a size never set
    _write(out_fd, frame_text(render(stats, flows, width, height, interval), width, height))


def _loop(path: str, interval: float, out_fd: int, in_fd: int | None, wake_r: int) -> None:
    """Poll, draw, wait; returns on q, raises SandboxGone or KeyboardInterrupt."""
    prev: list[dict] | None = None
    prev_t = 0.0
    while True:
        t, stats, rows = poll(path)
        flows = compute_rates(prev, rows, t - prev_t)
        prev, prev_t = rows, t
        deadline = t + interval
        _draw(out_fd, stats, flows, interval)
        while (why := _wait(deadline, wake_r, in_fd)) == "resize":
            _draw(out_fd, stats, flows, interval)
        if why == "quit":
            return


def watch(path: str, interval: float, out: IO[str] = sys.stdout, inp: IO[Any] = sys.stdin) -> int:
    """`slirpy flows --watch`: the live view on a terminal, one snapshot otherwise. Returns
    the exit status: 0 on Ctrl-C or q, 1 (with a one-line message) when the sandbox goes away."""
    if not out.isatty():
        return snapshot(path, interval, out)
    out.flush()
    out_fd = out.fileno()
    in_fd = inp.fileno() if inp is not None and inp.isatty() else None
    try:
        with terminal(out_fd, in_fd) as wake_r:
            _loop(path, interval, out_fd, in_fd, wake_r)
    except KeyboardInterrupt:
        return 0
    except SandboxGone as e:          # the terminal is restored by now: the message stays
        sys.stderr.write(f"slirpy: {e}\n")
        return 1
    return 0
