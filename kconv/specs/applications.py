"""Layer classes defined inside keras.applications (not in keras.layers) that real models use."""
from __future__ import annotations

from . import WeightDecl, declare, emits
from .core import _num, same_shape

declare(
    "LayerScale",
    family="applications",
    summary="ConvNeXt's per-channel scale: x * gamma (keras/src/applications/convnext.py)",
    weights=(WeightDecl("gamma", role="gamma", torch="gamma"),),
    output_shape=same_shape,
)

declare(
    "CustomScaleLayer",
    family="applications",
    summary="InceptionResNetV2's residual: inputs[0] + inputs[1] * scale",
    output_shape=lambda cfg, shapes: shapes[0],
    no_weights_reason="scale lives in the config",
)


@emits("LayerScale")
def _emit_layer_scale(e):
    e.runtime("LayerScale")
    cf = e.layout(0) == "cf"
    c = e.in_shapes[0][-1]
    m = e.module(f"LayerScale({int(c)}, channels_first={cf})")
    e.output(f"{m}({e.input(0, None)})", layout=e.layout(0))


@emits("CustomScaleLayer")
def _emit_custom_scale(e):
    lay = e.layout(0)
    a, b = e.input(0, lay), e.input(1, lay)
    e.output(f"{a} + {b} * {_num(float(e.cfg['scale']))}", layout=lay)
