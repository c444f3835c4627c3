"""Layer classes only old files have: CuDNNLSTM, CuDNNGRU (standalone Keras 2 / tf.keras 1.x) and the
Keras 1 Merge layer in the modes that have no Keras 2 class.

CuDNN layers store their kernels in cuDNN's memory order. What they compute and how their weights
map was read from Keras 2.2.4 ``keras/layers/cudnn_recurrent.py`` and Keras's own converter
``_convert_rnn_weights`` (``keras/engine/saving.py``; tf_keras ``saving/legacy/hdf5_format.py``):

- CuDNNLSTM = LSTM(activation tanh, recurrent_activation sigmoid) with two biases: ``bias`` (8u,) is
  the input biases (i, f, c, o) then the recurrent ones; Keras sums the halves, torch keeps them as
  ``bias_ih`` / ``bias_hh``.
- CuDNNGRU = GRU(reset_after=True, tanh, sigmoid); ``bias`` (6u,) is the (2, 3u) bias of that GRU.
- For each gate block ``k`` (in, u) of the input kernel the LSTM/GRU kernel block is
  ``k.reshape(u, in).T`` (Keras: ``k.T.reshape(k.shape, order='F')``); torch wants that transposed,
  i.e. ``k.reshape(u, in)``. Recurrent blocks are transposed (``r.T``), torch wants ``r``.

Conversion reuses the recurrent converters (kconv.specs.recurrent): a CuDNN layer is emitted as the
equivalent LSTM/GRU config.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..transforms import Reshape, Take, Transform
from . import WeightDecl, declare, emits, get
from ._shapes import last_dim, units
from .recurrent import GRU_ORDER, _rnn_shape

_GATES = {"CuDNNLSTM": 4, "CuDNNGRU": 3}
EQUIVALENT = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}


@dataclass(frozen=True)
class CudnnInputKernel(Transform):
    """(in, n*u) cuDNN input kernel -> torch weight_ih (n*u, in): each gate block reshaped (u, in)."""

    gates: int

    def apply(self, a):
        blocks = np.hsplit(a, self.gates)
        return np.ascontiguousarray(np.vstack([k.reshape(k.shape[1], k.shape[0]) for k in blocks]))

    def shape(self, shape):
        return (shape[1], shape[0])

    def describe(self):
        return f"per gate block (in, u): reshape(u, in) (cuDNN memory order), {self.gates} blocks stacked"


@dataclass(frozen=True)
class GateBlocksStacked(Transform):
    """(u, n*u) cuDNN recurrent kernel -> torch weight_hh (n*u, u): the gate blocks stacked as they are
    (Keras's LSTM/GRU recurrent block is r.T; torch wants its transpose, r)."""

    gates: int

    def apply(self, a):
        return np.ascontiguousarray(np.vstack(np.hsplit(a, self.gates)))

    def shape(self, shape):
        return (shape[1], shape[0])

    def describe(self):
        return f"gate blocks (u, u) stacked on axis 0 ({self.gates} blocks)"


@dataclass(frozen=True)
class Half(Transform):
    """First (0) or second (1) half along axis 0: the input / recurrent halves of a cuDNN bias."""

    index: int

    def apply(self, a):
        n = a.shape[0] // 2
        return np.ascontiguousarray(a[self.index * n:(self.index + 1) * n])

    def shape(self, shape):
        return (shape[0] // 2, *shape[1:])

    def describe(self):
        return ("first" if self.index == 0 else "second") + " half (" + ("input" if self.index == 0 else
                                                                          "recurrent") + " biases)"


def _cudnn(cls: str, summary: str, kt, rt, bias_targets):
    n = _GATES[cls]
    declare(
        cls,
        family="recurrent",
        summary=summary,
        weights=(
            WeightDecl("kernel", torch="weight_ih_l0", transform=kt,
                       shape=lambda cfg, s: (last_dim(cfg, s), n * units(cfg))),
            WeightDecl("recurrent_kernel", torch="weight_hh_l0", transform=rt,
                       shape=lambda cfg, s: (units(cfg), n * units(cfg))),
            WeightDecl("bias", torch=bias_targets, shape=lambda cfg, s: (2 * n * units(cfg),)),
        ),
        output_shape=lambda cfg, shapes: _rnn_shape({**cfg, "_cell": EQUIVALENT[cls]}, shapes),
        keras_subobjects=("cell",),
        same_as=lambda cfg: equivalent(cls, cfg),
        notes=("kernels are stored in cuDNN memory order: each gate block is reshaped, not transposed",
               "the bias holds input and recurrent biases (torch bias_ih / bias_hh)"),
    )


_cudnn("CuDNNLSTM", "cuDNN LSTM (tanh, sigmoid; gates i, f, c, o); bias (8u,) = input + recurrent biases",
       CudnnInputKernel(4), GateBlocksStacked(4),
       lambda cfg: [("bias_ih_l0", Half(0)), ("bias_hh_l0", Half(1))])
_cudnn("CuDNNGRU", "cuDNN GRU = GRU(reset_after=True, tanh, sigmoid); gates z, r, h (torch r, z, n)",
       CudnnInputKernel(3).then(GRU_ORDER), GateBlocksStacked(3).then(GRU_ORDER),
       lambda cfg: [("bias_ih_l0", Reshape((2, -1)).then(Take(0)).then(GRU_ORDER)),
                    ("bias_hh_l0", Reshape((2, -1)).then(Take(1)).then(GRU_ORDER))])


def equivalent(cls: str, cfg: dict) -> tuple[str, dict]:
    """The LSTM/GRU config that computes what a CuDNN layer computes (cudnn_recurrent.py)."""
    out = {k: v for k, v in cfg.items() if not k.startswith(("kernel_", "recurrent_", "bias_"))}
    out.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
    if cls == "CuDNNGRU":
        out["reset_after"] = True
    return EQUIVALENT[cls], out


declare(
    "Merge",
    family="merging",
    summary="Keras 1 Merge in a mode without a Keras 2 class ('cos', or a Python function)",
    output_shape=None,
    no_weights_reason="combines inputs, no parameters",
    notes=("modes sum/mul/ave/max/concat/dot are read as Add/Multiply/Average/Maximum/Concatenate/Dot",),
)


# --- PyTorch emission ------------------------------------------------------------------------------

@emits("CuDNNLSTM", "CuDNNGRU")
def _emit_cudnn(e):
    """Emitted by the LSTM/GRU converter with the equivalent config (same weights, same torch names)."""
    if e.has_mask():
        e.unsupported("masked input (Keras's CuDNN layers do not support masking)")
    cls, cfg = get(e.layer.class_name).same_as(e.cfg)
    original = e.layer
    e.layer = dataclasses.replace(original, class_name=cls, config=cfg)
    e.cfg = cfg
    try:
        get(cls).emit(e)
    finally:
        e.layer, e.cfg = original, original.config


@emits("Merge")
def _emit_merge(e):
    mode = e.cfg.get("mode")
    if e.cfg.get("mode_type", "raw") != "raw":
        e.unsupported(f"Merge with a Python function as mode ({str(mode)[:40]!r}): code is never run")
    e.unsupported(f"Merge mode {mode!r} is not converted")
