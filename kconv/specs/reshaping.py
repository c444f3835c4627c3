"""Reshaping layers."""
from __future__ import annotations

from . import Choice, declare
from ._shapes import assemble, cf_shape, prod, same_order, spatial, tup

NO_PARAMS = "reshapes data, no parameters"


def _flatten(cfg, shapes):
    s = shapes[0]
    return (s[0], prod(s[1:]))


def _reshape(cfg, shapes):
    target = list(cfg["target_shape"])
    if -1 in target:
        n = prod(shapes[0][1:])
        known = prod([d for d in target if d != -1])
        target[target.index(-1)] = None if n is None or not known else n // known
    return (shapes[0][0], *target)


def _permute(cfg, shapes):
    s = shapes[0]
    return (s[0], *(s[d] for d in cfg["dims"]))


def border_pairs(v, n):
    """A Cropping/ZeroPadding ``cropping``/``padding`` config as ``n`` (before, after) pairs."""
    if isinstance(v, int):
        return [(v, v)] * n
    v = list(v)
    if n == 1:
        return [tuple(v) if len(v) == 2 else (v[0], v[0])]
    return [tuple(p) if isinstance(p, (list, tuple)) else (p, p) for p in v]


def _cropping(n, sign, key):
    def final(cfg, shapes):
        pairs = border_pairs(cfg.get(key, 1), n)
        if n == 1:
            b, dims, c = shapes[0][0], [shapes[0][1]], shapes[0][2]
            d = dims[0]
            return (b, None if d is None else d + sign * sum(pairs[0]), c)
        b, dims, c = spatial(shapes[0], cfg)
        out = [None if d is None else d + sign * sum(p) for d, p in zip(dims, pairs)]
        return assemble(b, out, c, cfg)

    return final


def _upsampling(n):
    def shape(cfg, shapes):
        if n == 1:
            b, t, c = shapes[0]
            k = cfg.get("size", 2)
            return (b, None if t is None else t * k, c)
        b, dims, c = spatial(shapes[0], cfg)
        size = tup(cfg.get("size", 2), n)
        return assemble(b, [None if d is None else d * k for d, k in zip(dims, size)], c, cfg)

    return shape


declare("Flatten", family="reshaping", summary="flattens all but the batch axis (in the model's memory order)",
        output_shape=_flatten, no_weights_reason=NO_PARAMS,
        notes=("after an NHWC conv, Flatten orders features H,W,C",))
declare("Reshape", family="reshaping", summary="reshapes all but the batch axis to target_shape",
        output_shape=_reshape, no_weights_reason=NO_PARAMS)
declare("Permute", family="reshaping", summary="permutes the non-batch axes (dims are 1-based)",
        output_shape=_permute, no_weights_reason=NO_PARAMS)
declare("RepeatVector", family="reshaping", summary="(batch, f) -> (batch, n, f)",
        output_shape=lambda cfg, shapes: (shapes[0][0], cfg["n"], shapes[0][1]), no_weights_reason=NO_PARAMS)
for n in (1, 2, 3):
    declare(f"Cropping{n}D", family="reshaping", summary=f"crops {n}D borders",
            output_shape=_cropping(n, -1, "cropping"), no_weights_reason=NO_PARAMS)
    declare(f"ZeroPadding{n}D", family="reshaping", summary=f"pads {n}D borders with zeros",
            output_shape=_cropping(n, +1, "padding"), no_weights_reason=NO_PARAMS)
    declare(f"UpSampling{n}D", family="reshaping",
            summary=f"repeats {n}D positions by `size`" + (" (nearest or bilinear)" if n == 2 else ""),
            output_shape=_upsampling(n), no_weights_reason=NO_PARAMS,
            # keras/src/ops/image.py resize (Keras 3) and tf-keras image_utils (2.x) interpolations
            choices={"interpolation": Choice(("nearest", "bilinear", "bicubic", "area", "lanczos3", "lanczos5",
                                              "gaussian", "mitchellcubic"))} if n == 2 else {},
            notes=("bilinear uses half-pixel centres: torch align_corners=False",) if n == 2 else ())


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402


@emits("Flatten")
def _emit_flatten(e):
    rank = len(e.in_shapes[0])
    if rank == 1:  # Input(shape=()): Keras gives (batch, 1) (the product of no axes)
        e.output(f"{e.input(0, 'keras')}.unsqueeze(1)")
        return
    if e.cfg.get("data_format") == "channels_first" and rank > 2:
        # Keras Flatten(data_format='channels_first') moves channels last before flattening.
        e.output(f"{e.input(0, 'keras')}.permute{(0, *range(2, rank), 1)}.flatten(1)")
        return
    e.output(f"{e.input(0, 'keras')}.flatten(1)")


@emits("Reshape")
def _emit_reshape(e):
    target = [int(v) for v in e.cfg["target_shape"]]
    src, out = e.in_shapes[0], e.out_shapes[0] if e.out_shapes else None
    if -1 in target and out is not None and len(out) == len(target) + 1 and None not in out[1:]:
        target = [int(d) for d in out[1:]]  # the size Keras inferred: an empty batch reshapes too
    # Layout-neutral reshapes stay channels-first ("cf"): one that keeps the channel axis (only the
    # spatial axes change, each channel's positions keep their row-major order), and one whose input
    # and output hold their elements in the same order in both layouts (_shapes.same_order, e.g.
    # squeeze-excitation's (batch, C) -> (batch, 1, 1, C)).
    layout = "keras"
    if -1 not in target and len(target) >= 2 and e.layout(0) == "cf":
        if src is not None and len(src) >= 3 and src[-1] is not None and src[-1] == target[-1]:
            layout = "cf"
    if (layout == "keras" and -1 not in target and len(target) >= 2 and same_order(src)
            and same_order((None, *target)) and (e.layout(0) == "cf" or len(src) < 3)):
        layout = "cf"
    x = e.input(0, None if layout == "cf" else "keras")
    if not x.isidentifier():
        t = e.temp("in")
        e.line(f"{t} = {x}")
        x = t
    if layout == "cf":
        target = list(cf_shape((None, *target))[1:])
    e.output(f"{x}.reshape({x}.shape[0], {', '.join(str(d) for d in target)})", layout=layout)


@emits("Permute")
def _emit_permute(e):
    dims = tuple(int(d) for d in e.cfg["dims"])
    e.output(f"{e.input(0, 'keras')}.permute(0, {', '.join(str(d) for d in dims)})")


@emits("RepeatVector")
def _emit_repeat(e):
    e.output(f"{e.input(0, 'keras')}.unsqueeze(1).expand(-1, {int(e.cfg['n'])}, -1)")


def _spatial_torch_dims(e, n):
    """torch dims of the n spatial axes for the layout the layer will read."""
    if e.cfg.get("data_format", "channels_last") == "channels_first":
        return "keras", list(range(2, 2 + n))
    if n == 1 and e.layout(0) != "cf":
        return "keras", [1]  # a sequence (batch, steps, features) not coming from a convolution
    return "cf", list(range(2, 2 + n))


def _emit_crop(n):
    def emit(e):
        layout, dims = _spatial_torch_dims(e, n)
        x = e.input(0, layout)
        pairs = border_pairs(e.cfg.get("cropping", 1), n)
        rank = len(e.in_shapes[0])
        sl = [":"] * rank
        for (lo, hi), dim in zip(pairs, dims):
            sl[dim] = f"{int(lo)}:{-int(hi)}" if hi else f"{int(lo)}:"
        e.output(f"{x}[{', '.join(sl)}]", layout=layout)

    return emit


def _emit_pad(n):
    def emit(e):
        layout, dims = _spatial_torch_dims(e, n)
        x = e.input(0, layout)
        pairs = border_pairs(e.cfg.get("padding", 1), n)
        rank = len(e.in_shapes[0])
        flat = []
        for d in reversed(range(rank)):
            if d in dims:
                lo, hi = pairs[dims.index(d)]
                flat += [int(lo), int(hi)]
            elif d > min(dims):
                flat += [0, 0]
        # F.pad lists pads from the last dim backwards: trailing non-spatial dims need (0, 0) first.
        e.output(f"F.pad({x}, {flat})", layout=layout,
                 padded=(e.value(e.call.inputs[0]), tuple((int(lo), int(hi)) for lo, hi in pairs)))

    return emit


def _emit_upsampling(n):
    def emit(e):
        layout, dims = _spatial_torch_dims(e, n)
        x = e.input(0, layout)
        size = tup(e.cfg.get("size", 2), n) if n > 1 else (int(e.cfg.get("size", 2)),)
        interp = e.cfg.get("interpolation", "nearest")
        if interp == "nearest":
            for k, d in zip(size, dims):
                if int(k) != 1:
                    x = f"{x}.repeat_interleave({int(k)}, dim={d})"
            e.output(x, layout=layout)
        elif interp == "bilinear" and n == 2:
            e.output(f"F.interpolate({x}, scale_factor={tuple(float(k) for k in size)}, mode='bilinear', "
                     f"align_corners=False)", layout=layout)
        else:
            e.unsupported(f"interpolation {interp!r}")

    return emit


for _n in (1, 2, 3):
    emits(f"Cropping{_n}D")(_emit_crop(_n))
    emits(f"ZeroPadding{_n}D")(_emit_pad(_n))
    emits(f"UpSampling{_n}D")(_emit_upsampling(_n))
