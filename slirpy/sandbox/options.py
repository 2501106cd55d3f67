"""What a caller passes to `Sandbox.start` and the one error every step of the package raises.

Its own module so that each module of the package can use them without importing another
one's processes: this imports nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass

from slirpy.config import NetConfig
from slirpy.sandbox.errors import SandboxError  # noqa: F401 (the package's modules import it from here)

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable

# Where the sandbox's network comes from (see `modes`):
#   private  its own user+net ns with tap0 served by slirpy (`slirpy run`'s default)
#   none     its own user+net ns with only lo          host    no net ns of its own
#   join     the user+net (and UTS) ns of a running sandbox (`--network sandbox:NAME`)
#   member   a new net ns inside `userns_path`, set up by `member_setup` (named networks)
NET_MODES = ("private", "none", "host", "join", "member")


@dataclass
class SandboxOptions:
    """What a sandbox runs (argv), on which network (net, net_mode) and with what inside it."""

    argv: list[str]
    net: NetConfig
    map_subuids: bool = False      # full subuid/subgid range via newuidmap/newgidmap
    resolv_conf_text: str | None = None   # bind-mounted over /etc/resolv.conf inside, if set
    hosts_text: str | None = None         # likewise /etc/hosts
    hostname: str | None = None           # UTS name in a UTS namespace of its own (not with join)
    net_mode: str = "private"
    join_pid: int | None = None           # join: a process inside the namespaces to join
    userns_path: str | None = None        # member: the user namespace to enter first
    # member: called in the supervisor once its namespaces exist, before the command runs;
    # returns warnings, raises SandboxError
    member_setup: Callable[[], list[str]] | None = None
