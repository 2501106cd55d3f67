"""The fault injector (slirpy.impair): spec parsing, determinism, rates, bounds, and recovery of
a real `Stack` + a simulated guest `TcpConnection` through it (byte-exact both ways)."""

from __future__ import annotations

import math
import random

import pytest

from slirpy.config import NetConfig
from slirpy.impair import (
    REORDER_HOLD, ImpairedLink, Impairment, ImpairSpec, parse_impair,
)
from slirpy.tcpip.stack import Stack
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, VNET_HDR

from tests.fuzz.guestsim import make_transfer

# ------------------------------------------------------------------ parsing


def test_parse_full_spec():
    s = parse_impair("loss=5%,reorder=5%,dup=1%,corrupt=0.1%,delay=20,seed=7")
    assert s == ImpairSpec(loss=5.0, reorder=5.0, dup=1.0, corrupt=0.1, delay=20.0, seed=7)
    assert s.active


def test_parse_variants():
    assert parse_impair("") == ImpairSpec()
    assert not parse_impair("seed=3").active
    assert parse_impair(" loss = 2 , delay=15ms ,LIMIT=10") == ImpairSpec(loss=2.0, delay=15.0, limit=10)
    assert parse_impair("loss=100%,seed=0x10").seed == 16
    # the string form parses back to the same spec
    s = parse_impair("loss=5%,reorder=5%,dup=1%,corrupt=0.1%,delay=20,seed=7,limit=99")
    assert parse_impair(str(s)) == s


@pytest.mark.parametrize("text, field", [
    ("loss=101%", "loss"), ("loss=-1", "loss"), ("reorder=abc", "reorder"), ("dup=nan", "dup"),
    ("corrupt=inf", "corrupt"), ("delay=-5", "delay"), ("delay=1e9", "delay"),
    ("seed=-1", "seed"), ("seed=1.5", "seed"), ("limit=0", "limit"), ("bogus=1", "bogus"),
    ("loss", "name=value"), ("loss=", "name=value"), ("loss=1,loss=2", "loss"),
])
def test_parse_errors_name_the_field_and_range(text, field):
    with pytest.raises(ValueError) as ei:
        parse_impair(text)
    msg = str(ei.value)
    assert field in msg and "\n" not in msg
    if field in ("loss", "reorder", "dup", "corrupt") and "twice" not in msg:
        assert "0% to 100%" in msg


# ------------------------------------------------------------------ behaviour

def frames(n: int, size: int = 100, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [i.to_bytes(4, "big") + rng.randbytes(size - 4) for i in range(n)]


def run(imp: Impairment, inputs: list, direction: str = "to_stack", t0: float = 0.0, dt: float = 0.001):
    """Feed `inputs` one per `dt`, collecting everything passed on, including what comes out later."""
    feed = imp.guest_to_stack if direction == "to_stack" else imp.stack_to_guest
    out = []
    now = t0
    for f in inputs:
        a, b = imp.due(now)
        out += a if direction == "to_stack" else b
        out += feed(f, now)
        now += dt
    while (d := imp.next_deadline()) is not None:
        a, b = imp.due(d)
        out += a if direction == "to_stack" else b
    return out


def test_no_impairment_passes_everything_in_order_without_copies():
    imp = Impairment(ImpairSpec())
    fs = frames(100)
    out = run(imp, fs)
    assert out == fs and all(a is b for a, b in zip(out, fs))
    assert imp.next_deadline() is None and imp.held() == 0
    assert imp.counters == {"impair.to_stack.frames": 100}


def test_same_seed_same_fate_different_seed_different_fate():
    spec = parse_impair("loss=10%,reorder=10%,dup=10%,corrupt=10%,seed=42")
    fs = frames(2000)
    a = Impairment(spec, counters={})
    b = Impairment(spec, counters={})
    assert run(a, fs) == run(b, fs)
    assert a.counters == b.counters
    c = Impairment(ImpairSpec(loss=10, reorder=10, dup=10, corrupt=10, seed=43))
    assert run(c, fs) != run(Impairment(spec), fs)


def test_directions_are_independent():
    """Traffic in one direction does not change the fate of frames in the other."""
    spec = parse_impair("loss=20%,dup=20%,seed=5")
    fs = frames(500)
    quiet = Impairment(spec)
    busy = Impairment(spec)
    for f in frames(777, seed=9):
        busy.guest_to_stack(f, 0.0)
    assert run(quiet, fs, "to_guest") == run(busy, fs, "to_guest")


@pytest.mark.parametrize("field, counter, pct", [
    ("loss", "loss", 5.0), ("dup", "dup", 1.0), ("reorder", "reorder", 5.0), ("corrupt", "corrupt", 2.0),
    ("loss", "loss", 50.0),
])
def test_rates_over_100k_frames(field, counter, pct):
    n = 100_000
    imp = Impairment(ImpairSpec(**{field: pct}, seed=11))
    frame = bytes(200)
    out = 0
    for i in range(n):
        out += len(imp.guest_to_stack(frame, i * 1e-4))
        out += len(imp.due(i * 1e-4)[0])
    out += len(imp.due(1e9)[0])
    got = imp.counters.get("impair.to_stack." + counter, 0)
    p = pct / 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(got - n * p) < 5 * sigma, (got, n * p)
    expected_out = {"loss": n - got, "dup": n + got}.get(field, n)
    assert out == expected_out


def test_loss_drops_and_dup_doubles():
    fs = frames(10)
    assert run(Impairment(ImpairSpec(loss=100)), fs) == []
    assert run(Impairment(ImpairSpec(dup=100)), fs) == [f for f in fs for _ in (0, 1)]


def test_reorder_swaps_a_held_frame_behind_its_successor():
    fs = frames(3000)
    imp = Impairment(ImpairSpec(reorder=20, seed=3))
    out = run(imp, fs)
    assert sorted(out) == sorted(fs) and out != fs
    held = imp.counters["impair.to_stack.reorder"]
    assert 400 < held < 800
    # a held frame comes out after its successor: it moves later (the last one, released by
    # its deadline with nothing behind it, may keep its place); nothing else does
    pos = {f: i for i, f in enumerate(out)}
    late = sum(1 for i, f in enumerate(fs) if pos[f] > i)
    assert held - 1 <= late <= held


def test_reordered_frame_without_successor_leaves_after_the_hold():
    imp = Impairment(ImpairSpec(reorder=100))
    f = b"x" * 80
    assert imp.guest_to_stack(f, 1.0) == []
    assert imp.next_deadline() == pytest.approx(1.0 + REORDER_HOLD)
    assert imp.due(1.0 + REORDER_HOLD / 2) == ([], [])
    assert imp.due(1.0 + REORDER_HOLD) == ([f], [])
    assert imp.next_deadline() is None


def test_lost_successor_still_releases_a_held_frame():
    # 50% reorder and 50% loss with a fixed seed: find a held frame followed by a lost one
    imp = Impairment(ImpairSpec(reorder=50, loss=50, seed=1))
    c = imp.counters
    for i in range(200):
        before = (c.get("impair.to_stack.reorder", 0), c.get("impair.to_stack.loss", 0))
        held_before = imp.held()
        out = imp.guest_to_stack(i.to_bytes(2, "big") * 40, 0.0)
        if held_before and c.get("impair.to_stack.loss", 0) == before[1] + 1:
            assert len(out) == held_before and imp.held() == 0
            return
    pytest.fail("no held-then-lost pair in 200 frames")


def test_delay_keeps_order_and_timing():
    imp = Impairment(ImpairSpec(delay=20))
    fs = frames(5)
    for i, f in enumerate(fs):
        assert imp.stack_to_guest(f, i * 0.001) == []
    assert imp.next_deadline() == pytest.approx(0.020)
    assert imp.due(0.0205) == ([], fs[:1])
    assert imp.due(0.1) == ([], fs[1:])
    assert imp.counters["impair.to_guest.delayed"] == 5


def test_held_frames_are_bounded():
    imp = Impairment(ImpairSpec(delay=1000, limit=100))
    for f in frames(1000):
        imp.guest_to_stack(f, 0.0)
        imp.stack_to_guest(f, 0.0)
    assert imp.held() == 200
    assert imp.counters["impair.to_stack.drop.overflow"] == 900
    assert imp.counters["impair.to_guest.drop.overflow"] == 900
    a, b = imp.due(1.0)
    assert len(a) == len(b) == 100 and imp.held() == 0
    # reorder holds count against the same bound
    imp = Impairment(ImpairSpec(reorder=100, limit=10))
    for f in frames(50):
        imp.guest_to_stack(f, 0.0)
    assert imp.held() == 10 and imp.counters["impair.to_stack.drop.overflow"] == 40


def test_held_buffers_are_copied_when_the_caller_may_reuse_them():
    imp = Impairment(ImpairSpec(delay=5))
    buf = bytearray(b"a" * 60)
    imp.guest_to_stack(memoryview(buf), 0.0)
    imp.stack_to_guest((bytearray(b"h" * 40), memoryview(buf)), 0.0)
    buf[:] = b"b" * 60
    a, b = imp.due(1.0)
    assert a == [b"a" * 60] and b == [(b"h" * 40, b"a" * 60)]


@pytest.mark.parametrize("vnet", [False, True])
def test_corruption_flips_one_bit_past_the_headers(vnet):
    imp = Impairment(ImpairSpec(corrupt=100, seed=8), vnet_hdr=vnet)
    start = 34 + (12 if vnet else 0)
    fs = frames(500, size=start + 50)
    seen = set()
    for f in fs:
        [g] = imp.guest_to_stack(f, 0.0)
        diff = [i for i in range(len(f)) if f[i] != g[i]]
        assert len(diff) == 1 and diff[0] >= start
        assert bin(f[diff[0]] ^ g[diff[0]]).count("1") == 1
        seen.add(diff[0])
    assert min(seen) == start and max(seen) == start + 49    # the whole area is reachable
    assert imp.counters["impair.to_stack.corrupt"] == 500


def test_corruption_joins_writev_parts_and_skips_short_frames():
    imp = Impairment(ImpairSpec(corrupt=100, seed=1))
    head, payload = bytes(54), bytes(1000)
    [g] = imp.stack_to_guest((head, payload), 0.0)
    assert type(g) is bytes and len(g) == 1054 and g != head + payload
    short = bytes(34)
    assert imp.stack_to_guest(short, 0.0) == [short]
    assert imp.counters["impair.to_guest.corrupt.skipped"] == 1


def test_corrupting_an_offloaded_frame_is_counted_as_unverified():
    """NEEDS_CSUM frames carry only a partial checksum: nobody will notice the damage."""
    imp = Impairment(ImpairSpec(corrupt=100), vnet_hdr=True)
    offloaded = VNET_HDR.pack(F_NEEDS_CSUM, 1, 66, 1460, 34, 16, 0) + bytes(2000)
    plain = bytes(12) + bytes(100)
    imp.stack_to_guest(offloaded, 0.0)
    imp.stack_to_guest(plain, 0.0)
    assert imp.counters["impair.to_guest.corrupt"] == 2
    assert imp.counters["impair.to_guest.corrupt.unverified"] == 1


# ------------------------------------------------------------------ ImpairedLink


def test_impaired_link_wraps_the_stack_and_merges_deadlines():
    s = Stack(NetConfig(), vnet_hdr=True, offload=True, rng=random.Random(1))
    imp = Impairment(ImpairSpec(delay=50), vnet_hdr=True, counters=s.counters)
    w = ImpairedLink(s, imp)
    assert imp.counters is s.counters and s.half_open == 0 and s.flows() == [] and w.inner is s
    assert w.next_deadline() is None
    arp = bytes.fromhex("000000000000000000000000" "ffffffffffff020000000064080600010800060400010200"
                        "000000640a0002640000000000000a000202")
    w.receive_frame(arp, 1.0)
    assert s.counters.get("rx.frames", 0) == 0          # still on the delay line
    assert w.next_deadline() == pytest.approx(1.05)
    assert w.frames_to_send(1.04) == []
    assert w.frames_to_send(1.05) == []                 # reached the stack; its reply is delayed now
    assert s.counters["rx.frames"] == 1 and s.counters["arp.tx.reply"] == 1
    assert w.next_deadline() == pytest.approx(1.10)
    [reply] = w.frames_to_send(1.10)
    assert reply[12 + 12:12 + 14] == b"\x08\x06"
    assert s.counters["impair.to_guest.delayed"] == 1


# ------------------------------------------------------------------ recovery through a real Stack

LOSSY = "loss=5%,reorder=5%,dup=1%"


def impaired(spec_text: str):
    spec = parse_impair(spec_text)
    return lambda s: ImpairedLink(s, Impairment(spec, vnet_hdr=s.vnet_hdr, counters=s.counters))


def _recover(spec_text: str, size: int, seed: int, **kw):
    # Simulated time is free; at 5 % loss the run needs ~6 simulated seconds per MiB
    # (RTO-bound). The limit only catches a stall.
    kw.setdefault("time_limit", 600.0 + 20.0 * (size >> 20))
    tr = make_transfer(impaired(spec_text), size, size, seed=seed, **kw).run()
    tr.check()
    c = tr.stack.counters
    for d in ("to_stack", "to_guest"):
        assert c["impair.%s.loss" % d] > 0 and c["impair.%s.reorder" % d] > 0
    assert c["impair.to_stack.dup"] > 0
    return tr


def test_recovery_64mib_both_ways_without_offload():
    """Every segment is an MTU-sized frame: thousands of losses, reorders and duplicates."""
    tr = _recover(LOSSY + ",seed=1", 64 << 20, 1, mtu=1500, vnet=False, offload=False)
    assert tr.stack.counters["impair.to_guest.loss"] > 1000


def test_recovery_16mib_both_ways_with_offload_and_gso():
    tr = _recover(LOSSY + ",seed=2", 16 << 20, 2, mtu=1500, vnet=True, offload=True,
                  guest_iss=2**32 - 5000)              # the guest's sequence numbers wrap early
    assert tr.stack.counters["tcp.tx.gso_frames"] > 0


def test_recovery_with_corruption_and_delay_checksums_catch_every_flip():
    tr = _recover(LOSSY + ",corrupt=1%,delay=5,seed=3", 16 << 20, 3, mtu=1500, vnet=False, offload=False)
    c = tr.stack.counters
    dropped = sum(v for k, v in c.items() if k.startswith("rx.drop.tcp."))
    assert c["impair.to_stack.corrupt"] > 0 and dropped >= c["impair.to_stack.corrupt"]
    assert sum(tr.guest.drops.values()) >= c["impair.to_guest.corrupt"] > 0


@pytest.mark.long
@pytest.mark.parametrize("offload", [False, True])
def test_recovery_1gib_both_ways(offload):
    _recover(LOSSY + ",seed=4", 1 << 30, 4, mtu=1500, vnet=offload, offload=offload)


def test_the_transfer_check_sees_a_single_flipped_bit():
    from tests.fuzz.guestsim import Pattern
    p = Pattern(3 << 20, seed=1)
    whole = b"".join(p.slice(off, 65536) for off in range(0, 3 << 20, 65536))
    assert len(whole) == 3 << 20 and p.matches(0, whole)
    assert whole[:Pattern.PERIOD] == whole[Pattern.PERIOD:2 * Pattern.PERIOD]
    bad = bytearray(whole)
    bad[2_000_000] ^= 0x10
    assert not p.matches(0, bad)
    assert not p.matches(1, whole[:1000])          # shifted by one byte
    assert not p.matches((3 << 20) - 10, bytes(11))  # past the end
