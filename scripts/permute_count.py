"""Layout changes in the converted forward of every keras.applications model.

    python scripts/permute_count.py [--models A,B] [--cache /tmp/kconv_apps] [--markdown]

Builds each model with ``weights=None`` at a small input size (the architecture's minimum or near
it), saves it as legacy ``.h5`` under ``--cache`` (reused when there: only building imports Keras),
emits its ``model.py`` with kconv and runs one forward at batch 1 under a ``TorchFunctionMode`` that
counts the layout operations torch actually executes: ``permute``/``movedim``/``transpose`` (a
copy-free view, but it makes the next op read strided memory or copy) and ``F.pad`` (a copy
of the whole tensor before a convolution or pooling). Nothing is timed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# name: input shape (None: the architecture's fixed default)
APPS = {
    "ConvNeXtTiny": (64, 64, 3), "ConvNeXtSmall": (64, 64, 3), "ConvNeXtBase": (64, 64, 3),
    "ConvNeXtLarge": (64, 64, 3), "ConvNeXtXLarge": (64, 64, 3),
    "DenseNet121": (64, 64, 3), "DenseNet169": (64, 64, 3), "DenseNet201": (64, 64, 3),
    "EfficientNetB0": (96, 96, 3), "EfficientNetB1": (96, 96, 3), "EfficientNetB2": (96, 96, 3),
    "EfficientNetB3": (96, 96, 3), "EfficientNetB4": (96, 96, 3), "EfficientNetB5": (96, 96, 3),
    "EfficientNetB6": (96, 96, 3), "EfficientNetB7": (96, 96, 3),
    "EfficientNetV2B0": (96, 96, 3), "EfficientNetV2B1": (96, 96, 3), "EfficientNetV2B2": (96, 96, 3),
    "EfficientNetV2B3": (96, 96, 3), "EfficientNetV2S": (96, 96, 3), "EfficientNetV2M": (96, 96, 3),
    "EfficientNetV2L": (96, 96, 3),
    "InceptionResNetV2": (75, 75, 3), "InceptionV3": (75, 75, 3),
    "MobileNet": (96, 96, 3), "MobileNetV2": (96, 96, 3), "MobileNetV3Small": (96, 96, 3),
    "MobileNetV3Large": (96, 96, 3),
    "NASNetMobile": None, "NASNetLarge": None,
    "ResNet50": (64, 64, 3), "ResNet101": (64, 64, 3), "ResNet152": (64, 64, 3),
    "ResNet50V2": (64, 64, 3), "ResNet101V2": (64, 64, 3), "ResNet152V2": (64, 64, 3),
    "VGG16": (32, 32, 3), "VGG19": (32, 32, 3), "Xception": (71, 71, 3),
}

def build(name: str, path: Path):
    import keras

    shape = APPS.get(name)  # None: the architecture's default input
    kw = dict(weights=None, classes=10, classifier_activation=None)
    model = getattr(keras.applications, name)(**({"input_shape": shape} if shape else {}), **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.h5")
    model.save(tmp)
    tmp.replace(path)
    keras.backend.clear_session()


def count(path: Path):
    """(layout ops run in one forward at batch 1, the input shape as text)."""
    import torch

    from kconv import load
    from kconv.emit.codegen import Generator
    from kconv.testing import layout_ops

    model = load(path)
    ns: dict = {}
    exec(compile(Generator(model).generate(), f"<{path.stem} model.py>", "exec"), ns)  # kconv's own output
    net = ns["Model"]().eval()
    shape = model.layer(model.inputs[0].layer).calls[0].output_shapes[0]
    return layout_ops(net, torch.zeros(1, *shape[1:])), "x".join(str(d) for d in shape[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(APPS))
    ap.add_argument("--cache", default="/tmp/kconv_apps")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (docs/benchmarks.md)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        path = Path(args.cache) / f"{name}.h5"
        if not path.exists():
            print(f"building {name} ...", file=sys.stderr)
            build(name, path)
        try:
            seen, shape = count(path)
        except Exception as exc:  # one model failing leaves the others' rows
            print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            rows.append((name, "-", f"failed ({type(exc).__name__})", "-"))
            continue
        rows.append((name, shape, seen["permute"], seen["pad"]))
        if not args.markdown:
            print(f"{name:20} {shape:10} permutes {seen['permute']:3}  F.pad {seen['pad']:3}", flush=True)
    if args.markdown:
        print("| model | input | permutes in forward | F.pad in forward |")
        print("|---|---|---|---|")
        for name, shape, p, pad in rows:
            print(f"| {name} | {shape} | {p} | {pad} |")
    return 1 if any(isinstance(p, str) for _, _, p, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
