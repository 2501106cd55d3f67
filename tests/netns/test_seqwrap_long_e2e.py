"""A single flow longer than 4 GiB, byte-exact both ways (issue 7 part 7): every sequence
number in the stack wraps at least once. Long suite only (`helpers/test --long`)."""

from __future__ import annotations

import pytest

from .util import HOST_ADDR, expected, run_guest

pytestmark = pytest.mark.long

SIZE = (4 << 30) + (256 << 20) + 7          # 4.25 GiB + 7


def test_upload_over_4gib_single_flow(host_server):
    srv = host_server("sink")
    (r,) = run_guest([], [{"op": "upload", "host": HOST_ADDR, "port": srv.port,
                           "size": SIZE, "seed": 4242}], timeout=1200)
    assert r.get("server") == {"len": SIZE, "sha": expected(SIZE, 4242)}, r


def test_download_over_4gib_single_flow(host_server):
    srv = host_server("source", size=SIZE, seed=4343)
    (r,) = run_guest([], [{"op": "download", "host": HOST_ADDR, "port": srv.port}], timeout=1200)
    assert r == {"len": SIZE, "sha": expected(SIZE, 4343)}
