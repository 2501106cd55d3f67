"""slirpy/top.py's pure half: rates between two polls, sorting, numbers, the width-dependent
layout and the frame's terminal bytes."""

from __future__ import annotations

import pytest

from slirpy.top import (COLUMNS, DROP_ORDER, RatedFlow, choose_columns, clip_left, compute_rates,
                        format_age, format_bytes, format_rate, frame_text, header_line, render,
                        sort_flows, strip_escapes)


def row(fid, up, down, *, age=10.0, proto="tcp", guest=None, host="203.0.113.1:80",
        state="ESTABLISHED", unit="bytes", counters=True):
    r = {"proto": proto, "direction": "out", "guest": guest or f"10.0.2.100:{40000 + fid}",
         "host": host, "state": state, "to_host": up, "to_guest": down, "unit": unit, "age": age}
    if counters:
        r.update(id=fid, bytes_to_host=up, bytes_to_guest=down)
    return r


def by_id(flows):
    return {f.row["id"]: (f.to_host, f.to_guest) for f in flows}


# ------------------------------------------------------------------ rates


def test_rates_of_rows_matched_by_id_across_polls():
    prev = [row(1, 100, 1000), row(2, 0, 0)]
    cur = [row(2, 50, 0), row(1, 300, 5000)]          # another order: matched by id
    assert by_id(compute_rates(prev, cur, 2.0)) == {1: (100.0, 2000.0), 2: (25.0, 0.0)}


def test_first_poll_has_no_rates():
    flows = compute_rates(None, [row(1, 100, 1000)], 1.0)
    assert by_id(flows) == {1: (None, None)}
    assert format_rate(flows[0].to_host) == "-"


def test_a_new_flow_counts_from_zero_when_younger_than_the_interval():
    flows = compute_rates([row(1, 0, 0)], [row(1, 0, 0), row(7, 10, 4000, age=0.5)], 1.0)
    assert by_id(flows)[7] == (10.0, 4000.0)


def test_an_unmatched_old_flow_has_no_rate_rather_than_a_made_up_one():
    # not in the previous poll, yet older than the interval: its bytes did not all move now
    flows = compute_rates([row(1, 0, 0)], [row(1, 0, 0), row(7, 10, 4000, age=30.0)], 1.0)
    assert by_id(flows)[7] == (None, None)


def test_vanished_flows_are_dropped():
    flows = compute_rates([row(1, 0, 0), row(2, 5, 5)], [row(2, 15, 25)], 1.0)
    assert by_id(flows) == {2: (10.0, 20.0)}


def test_counter_reset_is_not_a_negative_rate():
    # same id and endpoints, counters went down: another sandbox on the same socket path
    young = compute_rates([row(1, 500, 9000)], [row(1, 20, 30, age=0.3)], 1.0)
    assert by_id(young) == {1: (20.0, 30.0)}
    old = compute_rates([row(1, 500, 9000)], [row(1, 20, 30, age=50.0)], 1.0)
    assert by_id(old) == {1: (None, None)}


def test_same_id_other_endpoints_is_another_flow():
    prev = [row(1, 0, 0, guest="10.0.2.100:1000")]
    cur = [row(1, 600, 600, guest="10.0.2.100:2000", age=40.0)]
    assert by_id(compute_rates(prev, cur, 1.0)) == {1: (None, None)}


def test_rows_of_an_older_sandbox_without_ids_or_byte_counters():
    prev = [row(1, 10, 10, counters=False), row(2, 1, 1, proto="udp", unit="datagrams",
                                                  counters=False)]
    cur = [row(1, 30, 110, counters=False), row(2, 5, 9, proto="udp", unit="datagrams",
                                                 counters=False)]
    flows = compute_rates(prev, cur, 1.0)
    assert [(f.to_host, f.to_guest) for f in flows] == [(20.0, 100.0), (None, None)]


def test_udp_rates_use_the_byte_counters_not_the_datagram_counts():
    prev = [row(3, 0, 0, proto="udp", unit="datagrams") | {"to_host": 0, "to_guest": 0}]
    cur = [row(3, 1400, 2800, proto="udp", unit="datagrams") | {"to_host": 1, "to_guest": 2}]
    assert by_id(compute_rates(prev, cur, 1.0)) == {3: (1400.0, 2800.0)}


# ------------------------------------------------------------------ sorting


def test_sorted_by_total_rate_highest_first_then_bytes_then_age():
    flows = [RatedFlow(row(1, 0, 0), 10.0, 0.0), RatedFlow(row(2, 0, 0), 5.0, 500.0),
             RatedFlow(row(3, 0, 0), None, None), RatedFlow(row(4, 9, 9, age=1.0), 0.0, 0.0),
             RatedFlow(row(5, 9, 9, age=50.0), 0.0, 0.0)]
    assert [f.row["id"] for f in sort_flows(flows)] == [2, 1, 5, 4, 3]


# ------------------------------------------------------------------ numbers


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.00 KiB"), (1536, "1.50 KiB"),
    (15 * 1024 + 400, "15.4 KiB"), (999 * 1024, "999 KiB"), (1000 * 1024, "0.98 MiB"),
    (5 * 2**20, "5.00 MiB"), (123 * 2**30, "123 GiB"), (2**60, "1024 PiB"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
    assert len(text) <= 8


def test_format_rate():
    assert format_rate(None) == "-"
    assert format_rate(0.4) == "0 B/s"
    assert format_rate(2.5 * 2**20) == "2.50 MiB/s"


@pytest.mark.parametrize("s, text", [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (187, "3m07s"),
                                     (7500, "2h05m"), (4 * 86400 + 3 * 3600, "4d03h")])
def test_format_age(s, text):
    assert format_age(s) == text


def test_clip_left_keeps_the_port():
    assert clip_left("[2001:db8:1234::1]:443", 12) == "~234::1]:443"
    assert clip_left("10.0.2.100:80", 20) == "10.0.2.100:80"


# ------------------------------------------------------------------ layout


FLOWS = [RatedFlow(row(1, 5000, 3 * 2**20, age=125.0), 1024.0, 2.0 * 2**20),
         RatedFlow(row(2, 10, 10, proto="udp", unit="datagrams", state="UNREPLIED",
                       host="[2001:db8::1]:53", guest="[fd00::100]:40000"), 0.0, 0.0)]


def names(width):
    return [c.name for c, _ in choose_columns(width, FLOWS)]


def test_wide_terminal_shows_every_column():
    assert names(200) == [c.name for c in COLUMNS]


def test_columns_drop_in_the_defined_order_as_the_terminal_narrows():
    seen = []
    for width in range(200, 20, -1):
        gone = [n for n in DROP_ORDER if n not in names(width)]
        assert gone == list(DROP_ORDER[:len(gone)]), width
        seen.append(len(gone))
    assert seen[0] == 0 and seen[-1] == len(DROP_ORDER)
    assert names(60) == ["proto", "guest", "host", "to_host", "to_guest"]


@pytest.mark.parametrize("width", [200, 100, 80, 60, 50, 30])
def test_no_line_is_wider_than_the_terminal(width):
    lines = render({"flows": {"tcp": 1, "udp": 1}}, FLOWS, width, 24, 1.0)
    assert all(len(ln) <= width for ln in lines), lines
    assert len(lines) == 4


def test_narrow_layout_clips_endpoints_but_keeps_rates():
    lines = render({"flows": {"tcp": 1, "udp": 1}}, FLOWS, 60, 24, 1.0)
    tcp = lines[2]
    assert tcp.startswith("tcp") and "1.00 KiB/s" in tcp and "2.00 MiB/s" in tcp
    assert "10.0.2.100:40001" in tcp and "203.0.113.1:80" in tcp
    assert "ESTABLISHED" not in tcp         # STATE went before the endpoints were clipped
    assert "]:53" in lines[3]                # a clipped endpoint keeps its port


def test_render_sorts_and_shows_the_totals():
    stats = {"flows": {"tcp": 1, "udp": 1, "icmp_echo": 0, "tcp_half_open": 0,
                       "tcp_time_wait": 0}}
    lines = render(stats, list(reversed(FLOWS)), 200, 24, 2.0)
    assert lines[0].startswith("tcp 1 udp 1 icmp 0")
    assert "to-host 1.00 KiB/s" in lines[0] and "to-guest 2.00 MiB/s" in lines[0]
    assert "interval 2s" in lines[0]
    assert lines[1].split() == ["PROTO", "DIR", "GUEST", "HOST", "STATE", "TO-HOST/s",
                                "TO-GUEST/s", "TOTAL", "AGE"]
    assert lines[2].split()[:5] == ["tcp", "out", "10.0.2.100:40001", "203.0.113.1:80",
                                    "ESTABLISHED"]
    assert lines[2].split()[-7:] == ["1.00", "KiB/s", "2.00", "MiB/s", "3.00", "MiB", "2m05s"]
    assert lines[3].startswith("udp")


def test_header_keeps_the_important_parts_when_narrow():
    stats = {"flows": {"tcp": 12, "udp": 3, "icmp_echo": 1, "tcp_half_open": 2,
                       "tcp_time_wait": 4}}
    wide = header_line(stats, FLOWS, 1.0, 200)
    assert "half-open 2" in wide and "interval 1s" in wide
    narrow = header_line(stats, FLOWS, 1.0, 60)
    assert narrow.startswith("tcp 12 udp 3 icmp 1") and "to-host" in narrow
    assert "half-open" not in narrow and len(narrow) <= 60


def test_height_truncates_with_a_count_of_the_rest():
    many = [RatedFlow(row(i, 0, 0), float(i), 0.0) for i in range(1, 31)]
    lines = render({}, many, 100, 10, 1.0)
    assert len(lines) == 10
    assert lines[-1] == "... 23 more"
    assert "40030" in lines[2]               # the fastest first
    assert render({}, many, 100, 1, 1.0) == [render({}, many, 100, 10, 1.0)[0]]


def test_snapshot_render_has_no_limits():
    many = [RatedFlow(row(i, 0, 0), 0.0, 0.0) for i in range(1, 51)]
    assert len(render({}, many, 10_000, None, 1.0)) == 52


# ------------------------------------------------------------------ terminal bytes


def test_frame_homes_the_cursor_and_erases_each_line_end():
    text = frame_text(["ab", "cd"], 10, 5)
    assert text == "\x1b[Hab\x1b[K\r\ncd\x1b[K\r\n\x1b[J"
    assert strip_escapes(text) == "ab\r\ncd\r\n"


def test_full_width_lines_get_no_erase_and_a_full_screen_no_trailing_newline():
    text = frame_text(["x" * 10, "y" * 4, "z" * 30], 10, 3)
    assert text == "\x1b[H" + "x" * 10 + "\r\n" + "yyyy\x1b[K" + "\r\n" + "z" * 10
    assert "\x1b[2J" not in text             # never a full clear: no flicker
