"""quickready.py: slirp4netns mode configures its TAP from `default_network(o)` before config.py
is imported, and builds the NetConfig after the ready fd.  That is only sound if the two give
the same TAP settings and if every option set it takes builds a NetConfig without error."""

from __future__ import annotations

import itertools
import re

import pytest

from slirpy import config, quickready
from slirpy.slirp4netns import Exit, _int_text, build_config, parse_args

TAP_FIELDS = ("mtu", "offload", "guest_mac", "network", "gateway", "guest", "ipv6")


def test_its_constants_are_configs() -> None:
    for name in ("DEFAULT_CIDR", "DEFAULT_CIDR6", "MTU_MIN", "MTU_MAX", "IPV6_MTU_MIN"):
        assert getattr(quickready, name) == getattr(config, name), name


FLAG_SETS = [[], ["-6"], ["--disable-host-loopback"], ["--disable-dns"], ["--enable-sandbox", "--enable-seccomp"],
             ["-6", "--disable-dns", "--disable-host-loopback"], ["--netns-type=path"]]
MTUS = [None, "576", "1279", "1280", "1500", "9000", "65520", "65521", "575"]


def option_sets():
    for flags, mtu in itertools.product(FLAG_SETS, MTUS):
        argv = ["-c", "-r", "3", *flags, *([] if mtu is None else ["--mtu", mtu])]
        yield argv + (["/"] if "--netns-type=path" in flags else ["123"]) + ["tap0"]


@pytest.mark.parametrize("argv", list(option_sets()), ids=" ".join)
def test_what_it_takes_builds_the_same_tap_settings(argv) -> None:
    o = parse_args(argv)
    quick = quickready.default_network(o)
    if quick is None:
        # what it leaves to the ordinary order: here, exactly the MTUs build_config refuses
        with pytest.raises(Exit):
            build_config(o)
        return
    full = build_config(o)            # never refuses what default_network took
    for name in TAP_FIELDS:
        assert getattr(quick, name) == getattr(full, name), name
    if full.ipv6:
        assert (quick.guest6, quick.gateway6) == (full.guest6, full.gateway6)


@pytest.mark.parametrize("extra", [["--cidr", "10.0.2.0/24"], ["--cidr", "192.168.9.0/24"],
                                   ["-c", "--macaddress", "02:00:00:00:00:01"],
                                   ["--outbound-addr", "127.0.0.1"], ["-6", "--outbound-addr6", "::1"],
                                   ["-a", "/tmp/api.sock"], ["--target-type", "bess"]])
def test_options_that_change_or_may_refuse_the_network_take_the_ordinary_order(extra) -> None:
    assert quickready.default_network(parse_args(["-c", *extra, "123", "tap0"])) is None


def test_the_ordinary_order_still_refuses_before_any_tap() -> None:
    o = parse_args(["-c", "-6", "--mtu", "1000", "123", "tap0"])
    assert quickready.default_network(o) is None
    with pytest.raises(Exit):
        build_config(o)


@pytest.mark.parametrize("text", ["1", "+1", "-1", " 42", "\t7", "4 ", "", " ", "+", "1.0", "0x1", "١٢",
                                  "\u00a05", "1_0", "+-1", "--1", "12a", "\u20073"])
def test_int_text_is_the_regular_expression_it_replaces(text) -> None:
    assert _int_text(text) == bool(re.fullmatch(r"\s*[+-]?\d+", text))
