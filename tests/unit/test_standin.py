"""standin: a module imported with one of its imports answered by a stand-in (start-up).

Each case runs in a fresh interpreter: what is imported, and when, is what is checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


# A module "probe_target" whose import runs the probe's exec_target(module).
FINDER = r"""
import importlib.abc, importlib.machinery
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "probe_target" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        exec_target(module)
sys.meta_path.insert(0, Finder())
"""


def probe(script: str) -> dict:
    script = script.replace("{FINDER}", FINDER)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


PLACES = r"""
import json, sys, types
from slirpy import standin
import email                      # a package whose submodule is stood in for
before = sys.modules.get("email.utils")
fake = types.ModuleType("email.utils")
seen = {}

def exec_target(module):
    import email.utils
    seen["during"] = sys.modules["email.utils"] is fake and email.utils is fake
    if FAIL:
        raise ImportError("probe_target failed")
{FINDER}try:
    standin.import_with("probe_target", {"email.utils": fake})
except ImportError:
    seen["raised"] = True
after = sys.modules.get("email.utils")
print(json.dumps({**seen, "restored": after is before, "attr": getattr(email, "utils", None) is before,
                  "stand_in_left": after is fake or getattr(email, "utils", None) is fake}))
"""


@pytest.mark.parametrize("fail", [False, True])
def test_the_stand_in_is_there_only_during_the_import(fail):
    r = probe(f"FAIL = {fail}\n{PLACES}")
    assert r["during"] is True
    assert r.get("raised", False) is fail
    assert r["restored"] and r["attr"] and not r["stand_in_left"]


def test_an_imported_module_is_returned_as_it_is():
    r = probe("import json, sys, types\nfrom slirpy import standin\nimport colorsys\n"
              "fake = types.ModuleType('math')\n"
              "print(json.dumps({'same': standin.import_with('colorsys', {'math': fake}) is colorsys,"
              " 'math': sys.modules.get('math') is not fake}))")
    assert r == {"same": True, "math": True}
