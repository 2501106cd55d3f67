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
# _attach), then --version through the console script's own main().
PROBE = r"""
import json, sys
import slirpy.slirp4netns as s
import uvloop, slirpy.runtime, slirpy.serve, slirpy.sandbox
from slirpy.sandbox import AttachOptions, start_attach
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


def test_the_probe_sees_a_heavy_import() -> None:
    # the check above can fail: the same probe after importing what the child imports
    assert "pyroute2" in loaded_heavy_modules("import slirpy.netconf, pyroute2\n" + PROBE)
    assert "click" in loaded_heavy_modules("import slirpy.cli\n" + PROBE)
