"""kconv.load must not import tensorflow, keras, torch or jax (DESIGN.md §1): checked in a fresh process."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import FIXTURES

HEAVY = ("tensorflow", "keras", "tf_keras", "torch", "jax")

# A load error is test_load's business: here the imports made up to it must still be clean.
SCRIPT = r"""
import json, sys
import kconv, kconv.errors
try:
    m = kconv.load(sys.argv[1])
except kconv.errors.KconvError as e:
    m = None
    print(f"load failed: {e}", file=sys.stderr)
if m is not None:
    for _, layer in m.walk():  # touch what inspect touches, and read the data
        for w in layer.weights:
            w.read()
    m.param_counts()
    m.output_shapes()
heavy = sorted(k for k in sys.modules if k.split(".")[0] in json.loads(sys.argv[2]))
print(json.dumps(heavy))
"""

FILES = sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".keras", ".h5"))


def test_there_are_fixtures():
    assert FILES, f"no fixtures in {FIXTURES} (run scripts/make_fixtures.py)"


@pytest.mark.parametrize("name", FILES)
def test_load_imports_no_framework(name):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(FIXTURES / name), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], f"kconv.load({name}) imported {heavy}"
