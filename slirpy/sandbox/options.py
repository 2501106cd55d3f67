"""What a caller passes to `Sandbox.start` and the one error every step of the package raises.

Its own module so that each module of the package can use them without importing another
one's processes: this imports nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass

from slirpy.config import NetConfig


class SandboxError(Exception):
    """Starting the sandbox failed; str() is one line a user can act on."""


@dataclass
class SandboxOptions:
    argv: list[str]
    net: NetConfig
    map_subuids: bool = False      # full subuid/subgid range via newuidmap/newgidmap
    resolv_conf_text: str | None = None   # bind-mounted over /etc/resolv.conf inside, if set
