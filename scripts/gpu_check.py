#!/usr/bin/env python
"""GPU smoke check: convert the fixtures (and saved equivalence models) and run them on a device in full
float32 and under TF32, against the Keras outputs stored next to them. Needs torch and kconv only (no
TensorFlow: the reference outputs were computed where Keras runs).

    python scripts/gpu_check.py                       # CUDA, the committed fixtures
    python scripts/gpu_check.py --extra DIR           # also every DIR/**/X.keras|X.h5 with X.io.npz beside it
    python scripts/gpu_check.py --device cpu          # the same check on the CPU (TF32 does not apply)

Equivalence models with their inputs and Keras outputs are written by the test suite when
KCONV_SAVE_EQUIVALENCE=DIR is set (tests/equivalence/harness.py): run the suite once where Keras is,
copy DIR to the GPU machine, pass it with --extra.

Prints one row per model: the max abs error and the verdict in float32 (TF32 off; tolerance 1e-5
absolute + 1e-5 relative) and with TF32 allowed (5e-3, as kconv verify --allow-tf32), and whether any
output came back off the device. Exit status 1 when a float32 run fails, 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

F32_TOL = 1e-5
TF32_TOL = 5e-3
SKIP = ("weights_only",)  # Keras must pair these: covered by tests/test_legacy.py


def options(model: Path) -> dict:
    """What converting a fixture needs, as tests/test_legacy.py gives it: Keras 1 files do not record the
    backend that wrote them (the fixtures' writer was Theano); weights-only files take X.json."""
    opts = {}
    if model.name.startswith("k1_"):
        opts["backend_of_writer"] = "theano"
    config = model.with_name(model.name.rsplit(".", 1)[0] + ".json")
    if config.exists():
        opts["config"] = config
    return opts


def extensions(model: Path) -> list:
    """The example extension a custom-layer fixture converts with (fixtures/custom/extensions.json)."""
    listing = model.parent / "extensions.json"
    if not listing.exists():
        return []
    name = json.loads(listing.read_text()).get(model.name.rsplit(".", 1)[0])
    return [str(Path(__file__).resolve().parent.parent / "examples" / "extensions" / name)] if name else []


def pairs(dirs):
    for d in dirs:
        for io in sorted(Path(d).rglob("*.io.npz")):
            stem = io.name[: -len(".io.npz")]
            for ext in (".keras", ".h5"):
                model = io.with_name(stem + ext)
                if model.exists() and not any(s in model.name for s in SKIP):
                    yield model, io


def run_one(model, io, device, tmp):
    import torch

    import kconv
    from kconv.verify import torch_side

    from kconv import extend

    with extend.active(extensions(model)):
        out = kconv.convert(model, Path(tmp) / f"{model.parent.name}_{model.name}", **options(model))
    data = np.load(io)
    ins = [data[k] for k in sorted(data.files) if k.startswith("input_")]
    exp = [data[k] for k in sorted(data.files) if k.startswith("output_")]
    man = json.loads((out / "kconv.json").read_text())
    if man.get("channels_first"):
        return None
    net = kconv.load_converted(out, device=device)
    row = {}
    for label, tf32 in (("float32", False), ("tf32", True)):
        with torch_side.precision(device, allow_tf32=tf32), torch.no_grad():
            outs = net(*[torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in ins])
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        off = [str(o.device) for o in outs if o.device.type != torch.device(device).type]
        tol = TF32_TOL if tf32 else F32_TOL
        err, ok = 0.0, len(outs) == len(exp)
        for o, e in zip(outs, exp):
            g = o.float().cpu().numpy().astype(np.float64)
            e = np.asarray(e, np.float64)
            if g.shape != e.shape:
                ok, err = False, float("inf")
                continue
            d = np.abs(g - e)
            err = max(err, float(d.max()) if d.size else 0.0)
            ok &= bool((d <= tol + tol * np.abs(e)).all())
        row[label] = (err, ok and not off, off)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--extra", action="append", default=[], help="more directories of X.keras|X.h5 + X.io.npz")
    args = p.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no CUDA device for torch {torch.__version__}; use --device cpu", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}); torch {torch.__version__}; float32 tolerance {F32_TOL:g}, "
          f"TF32 tolerance {TF32_TOL:g}")
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="kconv-gpu-check-") as tmp:
        for model, io in pairs([ROOT / "fixtures", *args.extra]):
            rel = model.relative_to(ROOT) if model.is_relative_to(ROOT) else model
            try:
                r = run_one(model, io, args.device, tmp)
            except Exception as e:  # a model that does not run on the device is a failed row
                rows.append((str(rel), "ERROR", f"{type(e).__name__}: {' '.join(str(e).split())[:80]}", "", ""))
                failed += 1
                continue
            if r is None:
                rows.append((str(rel), "-", "channels_first conversion: skipped", "", ""))
                continue
            f32, tf = r["float32"], r["tf32"]
            failed += not f32[1]
            rows.append((str(rel), f"{f32[0]:.2e}", "ok" if f32[1] else "DIFFERS" + (" (off device)" if f32[2] else ""),
                         f"{tf[0]:.2e}", "ok" if tf[1] else "DIFFERS"))
    head = ("model", "float32 max abs err", "float32", "TF32 max abs err", "TF32")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for r in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip())
    print(f"{len(rows) - failed} of {len(rows)} models match Keras in float32 on {args.device}")
    assert "tensorflow" not in sys.modules, "gpu_check must not need TensorFlow"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
