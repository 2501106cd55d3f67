"""`slirpy run`: from its parsed options to the command's exit code, without click.

Both parsers end here: entry.py's (runopts.parse, the quick way) and cli.py's click command
(for `--help`, errors, and anything runopts.parse leaves to click).  `run(values, given,
command)` takes the options as click passes them to a command (`values`), the names of those
typed on the command line (`given`) and the command, and never returns.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import NoReturn

from .config import (DEFAULT_CIDR6, IPV6_MTU_MIN, ConfigError, NetConfig, build_net_config,
                     parse_cidr6)
from .hardenopts import HardenOptions
from .launch import fail, run_sandbox
from .runopts import router_wide_given


def build_config(mtu: str, cidr: str, offload: bool, allow_host_loopback: bool, *,
                 dns: bool = True, dns_upstream: str | None = None,
                 resolv_conf: str = "/etc/resolv.conf", publish: Iterable[str] = (),
                 limits: Iterable[str] = (), outbound_addr: str | None = None,
                 ipv6: bool | None = None, cidr6: str | None = None,
                 outbound_addr6: str | None = None,
                 publish_auto_addr: str | None = None) -> NetConfig:
    """config.build_net_config; a bad value ends `slirpy` with its message and status 2.

    `ipv6` None: on unless the MTU is below 1280. A `cidr6` is checked even with IPv6 off, so
    that a typo is never silently ignored."""
    try:
        if cidr6 is not None:
            parse_cidr6(cidr6)
        config = build_net_config(cidr=cidr, mtu=mtu, offload=offload,
                                  allow_host_loopback=allow_host_loopback, dns_enabled=dns,
                                  dns_upstream=dns_upstream, resolv_conf=resolv_conf,
                                  publish=publish, limits=limits,
                                  outbound_addr=outbound_addr or None, ipv6=ipv6,
                                  cidr6=cidr6 or DEFAULT_CIDR6, outbound_addr6=outbound_addr6 or None,
                                  publish_auto_addr=publish_auto_addr)
    except ConfigError as e:
        fail(str(e), 2)
    if outbound_addr6 and not config.ipv6:
        fail(f"invalid --outbound-addr6 {outbound_addr6!r}: IPv6 is off (--no-ipv6, or an MTU "
             f"below {IPV6_MTU_MIN}); drop the option or turn IPv6 on", 2)
    return config


def pcap_size(text: str, option: str) -> int:
    """A pcap size option's value (K/M/G suffixes) in bytes; a bad one ends slirpy (status 2)."""
    from .pcap import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        fail(f"{option}: {e}", 2)


def busy_poll_us(text: str) -> int:
    """--busy-poll's value: microseconds, an integer >= 0 (exits with status 2 otherwise)."""
    try:
        us = int(text)
    except ValueError:
        us = -1
    if us < 0:
        fail(f"--busy-poll: {text!r} is not a number of microseconds >= 0", 2)
    return us


def run(values: dict, given: Iterable[str], command: tuple[str, ...]) -> NoReturn:
    """Run `command` as `slirpy run` with these options (see the module's docstring)."""
    from .named import check_run_options, run_named

    v = values
    typed = set(given)
    publish, api_socket, pcap, impair = v["publish"], v["api_socket"], v["pcap"], v["impair"]
    mode, naming = check_run_options(
        v["network"], v["name"], v["hostname"], v["add_hosts"], v["dns"], v["ips"], v["network_aliases"], {
            "-p/--publish": bool(publish), "--api-socket": api_socket is not None,
            "--pcap": pcap is not None, "--impair": impair is not None,
            "--stats-file": v["stats_file"] is not None},
        router_wide_given(typed))
    if v["debug"]:
        import logging             # here: start-up time (the runtime imports it later anyway)
        logging.basicConfig(level=logging.DEBUG, format="slirpy: %(levelname)s %(message)s")
    config = build_config(v["mtu"], v["cidr"], not v["no_offload"], v["allow_host_loopback"],
                          dns=not v["disable_dns"], dns_upstream=v["dns_upstream"],
                          resolv_conf=v["resolv_conf"], publish=publish, limits=v["limits"],
                          outbound_addr=v["outbound_addr"], ipv6=v["ipv6"], cidr6=v["cidr6"],
                          outbound_addr6=v["outbound_addr6"], publish_auto_addr=v["publish_auto_addr"])
    impair_spec = None
    if impair:
        from .impair import parse_impair
        try:
            impair_spec = parse_impair(impair)
        except ValueError as e:
            fail(str(e), 2)
    capture = (pcap, pcap_size(v["pcap_max_size"], "--pcap-max-size")) if pcap else None
    busy_poll = None if v["busy_poll"] is None else busy_poll_us(v["busy_poll"])
    map_subuids, stats_file = v["map_subuids"], v["stats_file"]
    harden = None if v["no_sandbox"] else HardenOptions()
    sys.exit(run_named(mode, list(v["network"]), config, list(command), naming, map_subuids=map_subuids,
                       api_socket=api_socket, run_private=lambda **named: run_sandbox(
                           config, list(command), map_subuids=map_subuids, stats_file=stats_file,
                           impair=impair_spec, pcap=capture, harden=harden, busy_poll_us=busy_poll,
                           api_socket_given=api_socket is not None, **named)))
