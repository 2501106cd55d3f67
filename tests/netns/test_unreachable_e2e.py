"""A destination the host cannot reach fails in the guest at once, with the host's reason.

The outer test namespace has no route but lo, so a connect from "the host" to TEST-NET-1
(192.0.2.0/24) fails with ENETUNREACH immediately; slirpy must hand that to the guest as an
ICMP unreachable quoting its SYN, so the guest's connect() fails the same way instead of
retrying SYNs until its own timeout. Nothing can leave: there is no route off the machine.
"""

from __future__ import annotations

import pytest

from .util import run_guest

UNROUTABLE = "192.0.2.1"


@pytest.mark.parametrize("options", [[], ["--no-offload", "--mtu", "1500"]], ids=["offload", "nooffload"])
def test_unreachable_destination_fails_at_once(options):
    (r,) = run_guest(options, [{"op": "connect", "host": UNROUTABLE, "port": 80, "timeout": 20}])
    assert r["ok"] is False
    assert r["error"] == "ENETUNREACH", r
    assert r["elapsed"] < 5.0, r    # generous: the guest's own SYN timeout would be ~2 minutes
