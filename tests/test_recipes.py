"""The serving recipes of README *Fast inference on CPU* run as written and keep Keras's numbers.

Each ``python`` block of README.md whose first line is ``# recipe: NAME`` is executed after the
``setup`` recipe, in a scratch directory holding ``out/cnn_fast`` (``kconv convert fixtures/cnn.keras``,
with and without ``--optimize``), with ``x`` replaced by the inputs Keras's outputs were stored for
(``fixtures/cnn.io.npz``); its ``y`` must match those outputs. With ``-m slow`` the same snippets run
on MobileNetV2 and ResNet50 (keras.applications, random weights), converted with --optimize.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ATOL = RTOL = 1e-5


def recipes() -> dict:
    text = (ROOT / "README.md").read_text()
    out = {}
    for body in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        m = re.match(r"# recipe: (.+)\n", body)
        if m:
            out[m.group(1).strip()] = body
    return out


RECIPES = [name for name in recipes() if name != "setup"]


def test_readme_has_the_recipes():
    assert set(recipes()) == {"setup", "torch.compile", "torch.jit.freeze",
                              "torch.jit.freeze + optimize_for_inference", "torch.export + AOTInductor"}


def _run(name, out_dir: str, x: np.ndarray, fresh_compile: bool = False) -> np.ndarray:
    """``fresh_compile``: no inductor caches, so that its passes run (and are counted)."""
    import torch
    import torch._inductor.config

    # The torch.compile recipe sets a process-wide inductor option: patch() puts it back afterwards
    # (monkeypatch would delete the attribute, which hides a torch config option for good).
    cfg = {"freezing": torch._inductor.config.freezing}
    if fresh_compile:
        cfg.update(fx_graph_cache=False, autotune_local_cache=False)
    with torch._inductor.config.patch(cfg):
        return _exec(name, out_dir, x)


def _exec(name, out_dir: str, x: np.ndarray) -> np.ndarray:
    import torch

    snippets = recipes()
    ns: dict = {}
    exec(compile(snippets["setup"].replace("out/cnn_fast", out_dir), "<README setup>", "exec"), ns)
    ns["x"] = torch.from_numpy(x)
    exec(compile(snippets[name].replace("out/cnn_fast", out_dir), f"<README {name}>", "exec"), ns)
    y = ns["y"]
    return (y[0] if isinstance(y, (list, tuple)) else y).detach().numpy()


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "default"])
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_on_fixture(name, optimize, tmp_path, monkeypatch):
    """README: the recipes start from an optimized output, and a default one works too."""
    import kconv

    kconv.convert(ROOT / "fixtures" / "cnn.keras", tmp_path / "out" / "cnn_fast", optimize=optimize)
    io = np.load(ROOT / "fixtures" / "cnn.io.npz")
    monkeypatch.chdir(tmp_path)
    from torch._dynamo.utils import counters

    counters.clear()
    y = _run(name, "out/cnn_fast", io["input_0"], fresh_compile=True)
    np.testing.assert_allclose(y, io["output_0"], atol=ATOL, rtol=RTOL)
    if name == "torch.compile":  # freezing took effect: both convolutions' weights prepacked for oneDNN
        assert counters["inductor"]["mkldnn_conv_weight_pack_matcher_count"] == 2, dict(counters["inductor"])


@pytest.mark.slow
@pytest.mark.keras
@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("app", ["MobileNetV2", "ResNet50"])
def test_recipe_on_application(app, name, tmp_path, monkeypatch):
    """Tolerance as tests/test_applications_convert.py: 1e-4 of the output's scale."""
    import kconv

    from test_applications_convert import FAST, _build

    model = _build(app, FAST[app])
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    ref = np.asarray(model(x, training=False))
    path = tmp_path / f"{app}.h5"
    model.save(path)
    kconv.convert(path, tmp_path / "out" / "fast", optimize=True)
    monkeypatch.chdir(tmp_path)
    y = _run(name, "out/fast", x)
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(y, ref, atol=1e-4 * scale, rtol=0)
