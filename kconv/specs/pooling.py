"""Pooling: Max/Average 1D/2D/3D and their global forms."""
from __future__ import annotations

from . import PADDING, Choice, declare
from ._shapes import assemble, channels_last, pool_length, spatial, tup


def pool_shape(n):
    def shape(cfg, shapes):
        b, dims, c = spatial(shapes[0], cfg)
        p = tup(cfg.get("pool_size", 2), n)
        s = cfg.get("strides")
        s = p if s is None else tup(s, n)
        out = [pool_length(dims[i], p[i], cfg.get("padding", "valid"), s[i]) for i in range(n)]
        return assemble(b, out, c, cfg)

    return shape


def global_shape(cfg, shapes):
    b, dims, c = spatial(shapes[0], cfg)
    if cfg.get("keepdims"):
        return assemble(b, [1] * len(dims), c, cfg)
    return (b, c)


for n in (1, 2, 3):
    for kind, verb in (("Max", "maximum"), ("Average", "average")):
        declare(
            f"{kind}Pooling{n}D",
            f"{'Avg' if kind == 'Average' else kind}Pool{n}D",  # Keras's alias
            family="pooling",
            summary=f"{verb} over {n}D windows (padding valid/same)",
            output_shape=pool_shape(n),
            no_weights_reason="pooling, no parameters",
            # keras/src/ops/operation_utils.py compute_pooling_output_shape: 'valid' or 'same'
            choices={"padding": Choice(PADDING)},
            notes=("'same' average pooling excludes the padding from the divisor",) if kind == "Average" else (),
        )
        declare(
            f"Global{kind}Pooling{n}D",
            f"Global{'Avg' if kind == 'Average' else kind}Pool{n}D",
            family="pooling",
            summary=f"{verb} over all {n}D positions (keepdims optional)",
            output_shape=global_shape,
            no_weights_reason="pooling, no parameters",
            # keras/src/layers/pooling/global_average_pooling1d.py: the mean over unmasked steps
            uses_mask=(kind, n) == ("Average", 1),
        )


# --- PyTorch emission ------------------------------------------------------------------------------
from . import emits  # noqa: E402
from .conv import padded_input  # noqa: E402


def _pool_args(e, n):
    p = tuple(int(v) for v in tup(e.cfg.get("pool_size", 2), n))
    s = e.cfg.get("strides")
    s = p if s is None else tuple(int(v) for v in tup(s, n))
    return p, s


def _pool_src(e, cls, p, s, **kw) -> str:
    """torch pooling: stride left out where it is the kernel size (torch's default)."""
    return e.ctor(cls, p, stride=s, **kw, defaults=dict(stride=p, padding=0))


def _emit_max(n):
    def emit(e):
        p, s = _pool_args(e, n)
        x, pad = padded_input(e, e.input(0, e.conv_layout()), n, p, s, (1,) * n, e.cfg.get("padding", "valid"),
                              value=float("-inf"))
        m = e.module(_pool_src(e, f"nn.MaxPool{n}d", p, s))
        e.output(f"{m}({x})", layout=e.conv_layout())

    return emit


def _emit_avg(n):
    def emit(e):
        p, s = _pool_args(e, n)
        x0 = e.input(0, e.conv_layout())
        x, pad = padded_input(e, x0, n, p, s, (1,) * n, e.cfg.get("padding", "valid"))
        if any(pad):
            m = e.module(_pool_src(e, f"nn.AvgPool{n}d", p, s, padding=pad, count_include_pad=False))
            e.output(f"{m}({x})", layout=e.conv_layout())
            return
        m = e.module(_pool_src(e, f"nn.AvgPool{n}d", p, s))
        if x == x0:
            e.output(f"{m}({x})", layout=e.conv_layout())
            return
        # Asymmetric 'same' padding: Keras divides by the number of real (unpadded) elements.
        ones = x.replace(x0, f"torch.ones_like({x0}[:, :1])", 1)
        e.output(f"{m}({x}) / {m}({ones})", layout=e.conv_layout())

    return emit


def _emit_global(kind):
    def emit(e):
        x = e.input(0, None)
        rank = len(e.in_shapes[0])
        lay = e.layout(0)
        if lay == "cf" or not channels_last(e.cfg):
            dims = tuple(range(2, rank))
        else:
            dims = tuple(range(1, rank - 1))
        keep = bool(e.cfg.get("keepdims", False))
        if kind == "Average" and rank == 3 and e.has_mask():
            # keras/src/layers/pooling/global_average_pooling1d.py: masked steps are left out of the mean
            m = e.mask(0)
            if m is not None:
                me = f"{m}.unsqueeze({2 if dims == (1,) else 1})"
                e.output(f"torch.where({me}, {x}, 0).sum(dim={dims}, keepdim={keep}) / "
                         f"{me}.to({x}.dtype).sum(dim={dims}, keepdim={keep})", layout=lay if keep else "keras")
                return
        op = "mean" if kind == "Average" else "amax"
        e.output(f"{x}.{op}(dim={dims}, keepdim={keep})", layout=lay if keep else "keras")

    return emit


for _n in (1, 2, 3):
    emits(f"MaxPooling{_n}D")(_emit_max(_n))
    emits(f"AveragePooling{_n}D")(_emit_avg(_n))
    emits(f"GlobalMaxPooling{_n}D")(_emit_global("Max"))
    emits(f"GlobalAveragePooling{_n}D")(_emit_global("Average"))
