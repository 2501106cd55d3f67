"""Start-up (issue 18): what the slirp4netns entry point imports in the serving process.

pyroute2 (~120 ms to import) is not imported on the way to the ready fd at all (the forked child
configures the TAP with ioctls: slirpy/ifioctl.py), and click (~20 ms) to `slirpy`'s own CLI:
neither may be imported by `slirpy-slirp4netns`'s process, whose time from exec to the ready
fd is what Podman and RootlessKit wait for.  Checked in a fresh interpreter (sys.modules).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyroute2", "click")

# Everything the serving process imports on its way to the ready fd (slirp4netns._serve and
# _attach), then --version through the console script's own main() (whose exit_now would end
# the probe before it prints: here it raises SystemExit instead).
PROBE = r"""
import json, sys
import slirpy.slirp4netns as s
import slirpy.exitnow
import uvloop, slirpy.runtime, slirpy.serve, slirpy.sandbox
from slirpy.sandbox import AttachOptions, start_attach
s.exit_now = sys.exit
sys.argv = ["slirpy-slirp4netns", "--version"]
try:
    s.main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
"""


def loaded_heavy_modules(probe: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{probe}"], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_slirp4netns_serving_process_imports_neither_pyroute2_nor_click() -> None:
    assert loaded_heavy_modules(PROBE) == []


def test_the_tap_is_configured_without_pyroute2() -> None:
    # netconf.configure (the child's critical path) uses ifioctl.py's ioctls
    probe = ("import sys, slirpy.netconf, slirpy.ifioctl, slirpy.sandbox.attach, slirpy.sandbox.supervisor\n"
             "import json\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))")
    assert loaded_heavy_modules(probe) == []


# slirp4netns mode's way to the ready fd for the options default_network() takes (quickready.py):
# parse, the TAP's settings, the attach child's modules.  None of these may be imported there.
NOT_BEFORE_READY = ("dataclasses", "inspect", "typing", "slirpy.config", "slirpy.sandbox.options",
                    "slirpy.sandbox.handle", "slirpy.sandbox.supervisor", "uvloop", "asyncio")
READY_PROBE = r"""
import json, sys
import slirpy.slirp4netns as s
o = s.parse_args(["-c", "-r", "3", "--mtu", "65520", "-6", "--enable-sandbox", "123", "tap0"])
net = s.default_network(o)
from slirpy.sandbox import AttachOptions, SandboxError, start_attach
import slirpy.sandbox.attach, slirpy.sandbox.handoff, slirpy.netconf, slirpy.tap, slirpy.ifioctl
AttachOptions(tap_name="tap0", net=net, configure=True, pid=123)
print(json.dumps(sorted(m for m in sys.modules if m in NOT_BEFORE_READY)))
"""


def loaded_before_ready(probe: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"NOT_BEFORE_READY = {NOT_BEFORE_READY!r}\n{probe}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_the_way_to_the_ready_fd_imports_no_dataclasses_typing_config_or_event_loop() -> None:
    assert loaded_before_ready(READY_PROBE) == []


def test_the_ready_probe_sees_such_an_import() -> None:
    assert loaded_before_ready("import slirpy.config\n" + READY_PROBE) == ["slirpy.config"]
    assert loaded_before_ready("import dataclasses\n" + READY_PROBE) == ["dataclasses", "inspect"]
    seen = loaded_before_ready("from slirpy.sandbox import Sandbox\n" + READY_PROBE)
    assert "slirpy.sandbox.handle" in seen
    assert "typing" in loaded_before_ready("import slirpy.harden\n" + READY_PROBE)


# `slirpy run`'s way to its sandbox's start (entry, runopts, runcmd, named, launch, the sandbox
# package; its NetConfig, SandboxOptions and HardenOptions made): what it need not import
# before its command starts.  harden.py (ctypes' functions) and libseccomp's binding are
# imported while the sandbox's child sets up tap0 (launch._import_harden), the event loop once
# the command runs.  No dataclasses: the module's import costs ~0.6 ms here (~4 ms more with
# its inspect), and each class ~0.2-0.8 ms, its __init__, __repr__, __eq__... generated and
# compiled as its module is imported; what the way makes (NetConfig and its parts,
# SandboxOptions, SandboxRecord, HardenOptions, named's Naming and NamedRun, the supervisor's
# _Init) is a plain class.
NOT_BEFORE_RUN = ("dataclasses", "typing", "inspect", "slirpy.harden", "ctypes.util", "subprocess", "uvloop",
                  "asyncio", "click")
RUN_PROBE = r"""
import json, sys
from slirpy import entry, runopts
parsed = runopts.parse(["-p", "8080:80", "--name", "web", "--limit", "max_half_open=64", "--", "true"])
from slirpy import runcmd, named, launch, registry, resolvconf
from slirpy.hardenopts import HardenOptions
from slirpy.sandbox import Sandbox, SandboxOptions
net = runcmd.build_config("65520", "10.0.2.0/24", True, False, publish=["8080:80"], limits=["max_half_open=64"])
options = SandboxOptions(argv=["true"], net=net), HardenOptions()
print(json.dumps(sorted(m for m in sys.modules if m in CHECKED)))
"""
# A hardened run's way on to its command's release: what it imports meanwhile (in parallel with
# the child's set-up of tap0, which it can outlast) comes before the command too.
NOT_BEFORE_RELEASE = ("dataclasses", "inspect", "uvloop", "asyncio", "click")
RELEASE_PROBE = RUN_PROBE.replace("print(", "launch._import_harden()\nprint(")


def imported(probe: str, checked: tuple[str, ...] = NOT_BEFORE_RUN) -> list[str]:
    """The modules of `checked` imported after `probe` (in a fresh interpreter)."""
    out = subprocess.run([sys.executable, "-c", f"CHECKED = {checked!r}\n{probe}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_slirpy_run_starts_its_sandbox_without_dataclasses_typing_harden_or_the_event_loop() -> None:
    assert imported(RUN_PROBE) == []
    # the probe can see them: harden.py (typing), a dataclass (--impair's), the event loop
    probe = RUN_PROBE.replace("import json, sys", "import json, sys, slirpy.harden")
    assert imported(probe) == ["slirpy.harden", "typing"]
    probe = RUN_PROBE.replace("import json, sys", "import json, sys, slirpy.impair")
    assert imported(probe) == ["dataclasses", "inspect", "typing"]
    assert "uvloop" in imported(RUN_PROBE.replace("print(", "launch._import_loop_and_runtime()\nprint("))


def test_a_hardened_run_releases_its_command_without_dataclasses() -> None:
    assert imported(RELEASE_PROBE, NOT_BEFORE_RELEASE) == []
    # the probe sees what was imported meanwhile
    assert "slirpy.harden" in imported(RELEASE_PROBE, ("slirpy.harden", "slirpy.seccompfilter"))


def test_the_probe_sees_a_heavy_import() -> None:
    # the check above can fail: the same probe after importing what the child imports
    assert "pyroute2" in loaded_heavy_modules("import slirpy.netconf, pyroute2\n" + PROBE)
    assert "click" in loaded_heavy_modules("import slirpy.cli\n" + PROBE)
