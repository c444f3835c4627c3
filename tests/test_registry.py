"""The layer declarations are complete: every convertible class is tested and documented.

A class counts as tested when its name appears in a test module, or when it is listed below with
the test that builds it under a computed name. `kconv layers` (generated from the declarations) is
its documentation entry.
"""
from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from kconv import specs
from kconv.cli import main

TESTS = Path(__file__).resolve().parent

# Classes whose tests build them by a computed name (f"Conv{n}D", getattr(layers, ...)) or through
# a whole model, with where.
TESTED_INDIRECTLY = {
    **{f"{k}Pooling{n}D": "equivalence/test_pooling.py (f'{kind}Pooling{n}D')" for k in ("Max", "Average")
       for n in (1, 2, 3)},
    **{f"Global{k}Pooling{n}D": "equivalence/test_pooling.py" for k in ("Max", "Average") for n in (1, 2, 3)},
    **{f"Conv{n}DTranspose": "equivalence/test_conv.py (f'Conv{n}DTranspose')" for n in (1, 2, 3)},
    "DepthwiseConv1D": "equivalence/test_conv.py (f'DepthwiseConv{n}D')",
    "SeparableConv1D": "equivalence/test_conv.py (f'SeparableConv{n}D')",
    "LayerScale": "test_applications_convert.py (ConvNeXtTiny)",
    "CustomScaleLayer": "test_applications_convert.py (InceptionResNetV2, slow)",
    "CuDNNLSTM": "test_legacy.py (fixtures/legacy/k22_cudnn.h5)",
    "CuDNNGRU": "test_legacy.py (fixtures/legacy/k22_cudnn.h5)",
    "ops.Any": "equivalence/test_recurrent.py (Masking in a functional model records ops.any)",
    "ops.LogicalOr": "equivalence/test_recurrent.py (masks merged by Concatenate/Add)",
}
# Keras aliases of a class (never written to a config: Keras serialises the class's own name) and
# Keras 1 names normalised by the loader.
ALIASES = re.compile(r"^(Global)?(Avg|Max)Pool\dD$|^Convolution\dD(Transpose)?$|^SeparableConvolution\dD$")
NOT_YET_TESTED = {
    "ThresholdedReLU": "Keras 2 only (tf-keras); declared, converter simple: x * (x > theta)",
    "ops.LogicalAnd": "Keras 3 records logical_or for merged masks; logical_and only from user code",
}


def _test_sources() -> str:
    return "\n".join(p.read_text() for p in TESTS.rglob("*.py") if p.name != "test_registry.py")


def test_every_convertible_class_has_an_equivalence_test():
    src = _test_sources()
    untested = []
    for name, spec in sorted(specs.registry().items()):
        if spec.emit is None or ALIASES.match(name) or name in TESTED_INDIRECTLY or name in NOT_YET_TESTED:
            continue
        base = name.split(".")[-1]
        if not re.search(rf"\b{re.escape(base)}\b", src):
            untested.append(name)
    assert not untested, f"convertible classes without a test: {untested}"


def test_indirect_entries_are_real():
    registry = specs.registry()
    for name in list(TESTED_INDIRECTLY) + list(NOT_YET_TESTED):
        assert name in registry and registry[name].emit is not None, name


def test_every_class_is_documented_by_kconv_layers():
    out = CliRunner().invoke(main, ["layers"]).output
    for name, spec in specs.registry().items():
        assert spec.summary, name
        assert name in out, name


LAZY_GET = r"""
import json, sys
from kconv import specs
out = {}
for name in json.loads(sys.argv[1]):
    spec = specs.get(name)
    out[name] = [spec.family if spec else None, sorted(specs._IMPORTED), specs._LOADED]
print(json.dumps(out))
"""


def test_get_imports_the_families_it_needs_and_finds_what_registry_has():
    """specs.get imports family modules in order until one declares the class (kconv inspect's
    start-up); a class it finds is the one registry() has, an unknown one makes it import them all."""
    import json
    import subprocess
    import sys

    names = ["Dense", "Conv2D", "LSTM", "NoSuchLayer"]
    r = subprocess.run([sys.executable, "-c", LAZY_GET, json.dumps(names)], capture_output=True, text=True,
                       timeout=120, check=True)
    got = json.loads(r.stdout)
    reg = specs.registry()
    for name in names[:3]:
        assert got[name][0] == reg[name].family
    assert got["Dense"][1] == ["core"] and not got["Dense"][2]
    assert not got["LSTM"][2] and "legacy" not in got["LSTM"][1]
    assert got["NoSuchLayer"] == [None, sorted(specs.FAMILIES), True]
