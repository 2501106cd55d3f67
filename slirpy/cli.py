"""Command line: parse arguments into a NetConfig and hand over to the sandbox and runtime."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
from .config import (DEFAULT_CIDR, DEFAULT_MTU, ConfigError, NetConfig, parse_cidr,
                     parse_dns_upstream, parse_mtu)


def _fail(message: str, code: int = 1) -> "NoReturn":  # noqa: F821
    click.echo(f"slirpy: {message}", err=True)
    sys.exit(code)


def build_config(mtu: str, cidr: str, offload: bool, allow_host_loopback: bool, *,
                 dns: bool = True, dns_upstream: str | None = None,
                 resolv_conf: str = "/etc/resolv.conf") -> NetConfig:
    try:
        return NetConfig(
            network=parse_cidr(cidr),
            mtu=parse_mtu(mtu),
            offload=offload,
            allow_host_loopback=allow_host_loopback,
            dns_enabled=dns,
            dns_upstream=parse_dns_upstream(dns_upstream) if dns_upstream else None,
            resolv_conf=resolv_conf,
        )
    except ConfigError as e:
        _fail(str(e), 2)


def run_sandbox(config: NetConfig, argv: list[str], *, map_subuids: bool = False,
                stats_file: str | None = None, quiet: bool = False, setup=None,
                impair=None) -> int:
    """Start the sandbox, serve it until the command exits, return the command's exit code."""
    import uvloop

    from .runtime import Runtime, serve_sandbox
    from .sandbox import Sandbox, SandboxError, SandboxOptions

    resolv_text = None
    if config.dns_enabled:
        from .resolvconf import ResolvConf
        resolv_text = ResolvConf(config.resolv_conf).sandbox_text(str(config.dns))
    try:
        sandbox = Sandbox.start(SandboxOptions(argv=list(argv), net=config, map_subuids=map_subuids,
                                               resolv_conf_text=resolv_text))
    except SandboxError as e:
        _fail(str(e), 1)
    try:
        if sandbox.fallback_reason and not quiet:
            click.echo(f"slirpy: notice: TAP offloads unavailable ({sandbox.fallback_reason}); "
                       "running without them (slower)", err=True)
        runtime = Runtime(config, sandbox.tap_fd, vnet_hdr=sandbox.vnet_hdr, offload=sandbox.offload,
                          impair=impair)
        code = uvloop.run(serve_sandbox(runtime, sandbox, setup))
        if stats_file:
            runtime.write_stats(stats_file)
        return code
    finally:
        sandbox.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slirpy")
def main() -> None:
    """Rootless userspace networking for Linux network namespaces."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--mtu", default=str(DEFAULT_MTU), show_default=True, help="MTU of tap0 (576-65520).")
@click.option("--cidr", default=DEFAULT_CIDR, show_default=True,
              help="Sandbox network; gateway is +2, DNS +3, guest +100 (prefix 1-25).")
@click.option("--no-offload", is_flag=True, help="Plain TAP without TSO/checksum offloads.")
@click.option("--allow-host-loopback", is_flag=True,
              help="Let the gateway address reach the host's 127.0.0.1.")
@click.option("--map-subuids", is_flag=True,
              help="Map the user's whole subuid/subgid range (needs newuidmap/newgidmap).")
@click.option("--disable-dns", is_flag=True,
              help="No DNS forwarder at network+3 (the sandbox keeps the host's resolv.conf).")
@click.option("--dns-upstream", metavar="ADDR[:PORT]",
              help="Forward DNS to this resolver instead of the host's resolv.conf nameservers.")
@click.option("--resolv-conf", default="/etc/resolv.conf", hidden=True,
              help="Host resolv.conf to read upstreams and search domains from (testing).")
@click.option("--stats-file", type=click.Path(dir_okay=False), help="Write counters as JSON on exit.")
@click.option("--impair", metavar="SPEC",
              help="Fault injection between tap0 and the stack, both directions: "
                   "loss=P%,reorder=P%,dup=P%,corrupt=P%,delay=MS,seed=N.")
@click.option("--debug", is_flag=True, help="Debug logging.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(mtu, cidr, no_offload, allow_host_loopback, map_subuids, disable_dns, dns_upstream,
        resolv_conf, stats_file, impair, debug, command):
    """Run COMMAND in a new network namespace with internet access through slirpy."""
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="slirpy: %(levelname)s %(message)s")
    config = build_config(mtu, cidr, not no_offload, allow_host_loopback, dns=not disable_dns,
                          dns_upstream=dns_upstream, resolv_conf=resolv_conf)
    impair_spec = None
    if impair:
        from .impair import parse_impair
        try:
            impair_spec = parse_impair(impair)
        except ValueError as e:
            _fail(str(e), 2)
    sys.exit(run_sandbox(config, list(command), map_subuids=map_subuids, stats_file=stats_file,
                         impair=impair_spec))


@main.command()
def doctor():
    """Check that this machine lets slirpy run, and say how to fix what does not."""
    from . import doctor as _doctor

    sys.exit(_doctor.print_report(sys.stdout))


@main.command()
@click.option("--size", default=64, show_default=True, help="MiB to move each way.")
@click.option("--mtu", default=str(DEFAULT_MTU), show_default=True)
@click.option("--no-offload", is_flag=True)
def selfcheck(size, mtu, no_offload):
    """Serve data on host loopback and move it through a sandbox both ways, checking sha256."""
    from .selfcheck import run_selfcheck

    config = build_config(mtu, DEFAULT_CIDR, not no_offload, True)
    sys.exit(run_selfcheck(config, size << 20))


@main.command("slirp4netns", add_help_option=False,
              context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def slirp4netns_cmd(args):
    """Drop-in for slirp4netns 1.2: serve a namespace someone else created (try: --help)."""
    from .slirp4netns import run as run_slirp4netns

    sys.exit(run_slirp4netns(list(args), "slirpy slirp4netns"))


if __name__ == "__main__":  # pragma: no cover
    main()
