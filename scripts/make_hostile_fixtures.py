#!/usr/bin/env python
"""Regenerate ``fixtures/hostile/``: model files whose stored code would act if it were ever run.

    python scripts/make_hostile_fixtures.py

Needs tensorflow-cpu (Keras 3). Writes

- ``lambda_marker.keras`` and ``lambda_marker.h5``: Input(4) -> Lambda -> Dense(2), where the Lambda's
  function creates the file named by the environment variable ``KCONV_HOSTILE_MARKER`` when it runs
  (and does nothing when the variable is unset, which is how it is built here: Keras traces the
  function while building the model). The marshalled bytecode is stored in the config.

After writing, the script proves the fixture is live: it loads the ``.keras`` file with Keras and
``safe_mode=False``, calls it with the variable set, and checks that the marker file appears. So a
test that finds no marker after ``kconv inspect``/``convert`` shows that kconv did not run the code.

The zip timestamps and ``metadata.json``'s date are fixed so reruns give the same bytes for the
same Python/Keras versions (the bytecode itself depends on the Python version).
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "hostile"
MARKER_VAR = "KCONV_HOSTILE_MARKER"


def _normalise_keras(path: Path):
    src = zipfile.ZipFile(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(meta).encode()
            if info.filename == "config.json":
                cfg = json.loads(data)
                _drop_ids(cfg)
                data = json.dumps(cfg).encode()
            dst.writestr(zipfile.ZipInfo(info.filename, (1980, 1, 1, 0, 0, 0)), data)
    src.close()
    path.write_bytes(buf.getvalue())


def _drop_ids(obj):
    if isinstance(obj, dict):
        obj.pop("shared_object_id", None)
        for v in obj.values():
            _drop_ids(v)
    elif isinstance(obj, list):
        for v in obj:
            _drop_ids(v)


def main():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.pop(MARKER_VAR, None)
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    # The whole payload is in the lambda's own code (no closure, no globals): what Keras marshals.
    fn = lambda t: (__import__("pathlib").Path(__import__("os").environ["KCONV_HOSTILE_MARKER"]).touch()  # noqa: E731
                    if "KCONV_HOSTILE_MARKER" in __import__("os").environ else None) or t * 2.0
    inp = keras.Input((4,), name="x")
    y = keras.layers.Lambda(fn, name="payload", output_shape=(4,))(inp)
    y = keras.layers.Dense(2, name="dense")(y)
    model = keras.Model(inp, y, name="hostile")
    OUT.mkdir(parents=True, exist_ok=True)
    model.save(OUT / "lambda_marker.keras")
    model.save(OUT / "lambda_marker.h5")
    _normalise_keras(OUT / "lambda_marker.keras")

    # Prove the payload is live: Keras, told to trust the file, runs it and the marker appears.
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "marker"
        os.environ[MARKER_VAR] = str(marker)
        loaded = keras.saving.load_model(OUT / "lambda_marker.keras", safe_mode=False)
        loaded(np.zeros((1, 4), "float32"))
        del os.environ[MARKER_VAR]
        if not marker.exists():
            sys.exit("the Lambda payload did not create the marker when run by Keras: fixture is not live")
    for p in sorted(OUT.iterdir()):
        print(p.relative_to(OUT.parent.parent), p.stat().st_size)


if __name__ == "__main__":
    main()
