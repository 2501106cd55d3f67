"""runopts.parse (`slirpy run` without click) against click's own parsing of the same command.

Whatever runopts.parse accepts must give exactly the values, the typed options and the command
that cli.py's click command gets; what it leaves to click (None) is listed below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from slirpy import cli, runopts
from slirpy.runopts import FLAG, MANY, PAIR, PATH, RUN_OPTIONS


def click_parse(args: list[str]) -> runopts.Parsed | None:
    """What click hands `slirpy run ARGS`'s callback, as a Parsed; None if click refuses ARGS."""
    parent = cli.main.make_context("slirpy", ["run"])     # -h/--help, as `slirpy run` has them
    try:
        ctx = cli.run.make_context("run", list(args), parent=parent)
    except (click.UsageError, click.BadParameter, click.exceptions.Exit):
        return None
    params = dict(ctx.params)
    command = params.pop("command")
    given = {o.dest for o in RUN_OPTIONS
             if ctx.get_parameter_source(o.dest) == click.core.ParameterSource.COMMANDLINE}
    return runopts.Parsed(params, given, command)


def same(a: runopts.Parsed, b: runopts.Parsed) -> bool:
    return (a.values, a.given, a.command) == (b.values, b.given, b.command)


def test_the_table_is_the_whole_click_command():
    declared = {p.name for p in cli.run.params} - {"command"}
    assert declared == {o.dest for o in RUN_OPTIONS}
    assert runopts.initial_values() == click_parse(["true"]).values
    assert runopts.ROUTER_WIDE <= declared                # a typo would skip a refusal silently
    assert set(runopts.router_wide_given({"ipv6"})) >= {"--mtu", "--ipv6/--no-ipv6", "--limit"}
    assert [text for text, typed in runopts.router_wide_given({"ipv6", "name"}).items() if typed] == \
        ["--ipv6/--no-ipv6"]


VALUES = st.sampled_from(["x", "", "-", "--", "-x", "--mtu", "a=b", "8080:80", "=1", "1500",
                          "/nonexistent/f", "10.0.3.0/24"])
WORDS = st.sampled_from(["true", "sh", "-c", "--", "-", "--help", "-p", "x y"])


@st.composite
def one_option(draw) -> list[str]:
    o = draw(st.sampled_from(RUN_OPTIONS))
    spelling = draw(st.sampled_from(o.decls))
    if o.kind in (FLAG, PAIR):
        return [spelling] if draw(st.integers(0, 9)) else [spelling + "=" + draw(VALUES)]
    value = draw(VALUES)
    form = draw(st.integers(0, 2))
    if form == 0:
        return [spelling, value]
    if form == 1 or spelling != "-p":
        return [spelling + "=" + value]
    return ["-p" + value]


@st.composite
def command_lines(draw) -> list[str]:
    args: list[str] = []
    for part in draw(st.lists(one_option(), max_size=6)):
        args += part
    if draw(st.integers(0, 7)) == 0:           # an unknown option, --help, -h, a lone -p
        args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from(["--bogus", "--help", "-h", "-x",
                                                                           "-p", "--mtu"])))
    if draw(st.booleans()):
        args.append("--")
    args += draw(st.lists(WORDS, max_size=4))
    return args


@settings(max_examples=1500, deadline=None)
@given(command_lines())
def test_what_parse_accepts_click_reads_the_same(args):
    ours = runopts.parse(args)
    if ours is not None:
        theirs = click_parse(args)
        assert theirs is not None, args
        assert same(ours, theirs), args


@pytest.mark.parametrize("args", [
    ["--", "sh", "-c", "echo hi"],
    ["sh", "-c", "echo hi", "--", "--mtu"],                # the command's own options and --
    ["-p", "8080:80", "-p8081:81/udp", "--publish=127.0.0.1:9:9", "--", "true"],
    ["--mtu", "1500", "--mtu=9000", "--ipv6", "--no-ipv6", "true"],   # the last one wins
    ["--name", "--mtu", "--", "true"],                     # a value that looks like an option
    ["--name=", "--network", "front", "--ip", "10.89.0.9", "--network-alias", "a", "-", "x"],
    ["--no-sandbox", "--debug", "--limit", "max_tcp_flows=9", "--limit", "udp_timeout=3", "true"],
    ["--stats-file", "/nonexistent/stats.json", "--pcap", "/nonexistent/p", "true"],
])
def test_common_command_lines_are_read_without_click(args):
    ours = runopts.parse(args)
    assert ours is not None
    assert same(ours, click_parse(args))


@pytest.mark.parametrize("args", [
    ["--help"], ["-h", "true"], ["--bogus", "true"], ["--no-sandbox=1", "true"], ["-x", "true"],
    ["--mtu"], ["-p"], [], ["--"], ["--mtu", "1500"],                 # no value, no command
    ["--stats-file", "/", "true"], ["--api-socket", "/etc/hostname", "true"],   # click.Path's checks
])
def test_what_parse_leaves_to_click(args):
    assert runopts.parse(args) is None


@pytest.mark.parametrize("option", ["--bogus", "--no-sandbox=1", "-x"])
def test_an_unknown_or_malformed_option_is_a_usage_error_not_the_command(option):
    # (click's ignore_unknown_options made `--bogus` the command: "--bogus: command not found")
    res = CliRunner().invoke(cli.main, ["run", option, "--", "true"])
    assert res.exit_code == 2, res.output
    assert option.split("=")[0] in res.stderr and "Error: " in res.stderr, res.stderr


def test_unchanged_help():
    # the options keep their order, spellings, metavars and defaults in --help
    out = CliRunner().invoke(cli.main, ["run", "--help"]).stdout
    lines = [line.split()[0] for line in out.splitlines() if line.startswith("  -")]
    assert lines[:3] == ["--mtu", "--cidr", "--ipv6"]
    assert lines[-3:] == ["--no-sandbox", "--debug", "-h,"]
    assert "  -p, --publish SPEC " in out and "--pcap-max-size SIZE  " in out
    assert "[default: 65520]" in out and "--resolv-conf" not in out


def test_slirpy_run_imports_no_click():
    probe = ("import json, sys\n"
             "import slirpy.runcmd as r\n"
             "def stop(values, given, command):\n"
             "    print(json.dumps([sorted(m for m in sys.modules if m.split('.')[0] == 'click'),"
             " values['mtu'], sorted(given), list(command)]))\n"
             "    sys.exit(0)\n"
             "r.run = stop\n"
             "import slirpy.named, slirpy.launch, slirpy.sandbox, slirpy.harden, slirpy.registry\n"
             "sys.argv = ['slirpy', 'run', '--mtu', '1500', '--', 'true']\n"
             "from slirpy.entry import main\n"
             "main()\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [[], "1500", ["mtu"], ["true"]]
