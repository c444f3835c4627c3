"""RNN weights stored in the other layout: CuDNNLSTM/CuDNNGRU weights under an LSTM/GRU architecture
(weights trained on a GPU, shipped with a CPU-friendly architecture JSON), and the reverse.

Keras 2 converts them when it loads legacy HDF5 weights, detecting the writer from the bias shape:
tf.keras 2 ``tf_keras/src/saving/legacy/hdf5_format.py`` ``preprocess_weights_for_loading`` ->
``_convert_rnn_weights`` (standalone Keras 2.1.3+: ``keras/engine/saving.py``, the same code), for
``load_model`` and ``load_weights`` alike, for a layer on its own and for the two layers of a
``Bidirectional``. What it does, and what is done here, literally:

- only when the layer has three weights (kernel, recurrent kernel, bias; ``use_bias=False`` layers are
  never converted), ``units = recurrent_kernel.shape[0]``;
- LSTM: bias ``(8u,)`` means CuDNNLSTM weights: each gate block ``k`` of the kernel becomes
  ``k.T.reshape(k.shape, order='F')``, each recurrent block ``r.T``, and the bias is the sum of its
  halves (input + recurrent biases); ``(4u,)`` is LSTM's own; any other shape is an error;
- GRU: bias ``(6u,)`` means CuDNNGRU, which is ``GRU(reset_after=True)``: the same kernel relayout and
  the bias reshaped ``(2, 3u)``; CuDNNGRU weights under ``reset_after=False`` are refused ("CuDNNGRU is
  not compatible with GRU(reset_after=False)"), as are reset_after=True weights under reset_after=False;
- CuDNNLSTM / CuDNNGRU architectures given LSTM / GRU(reset_after=True) weights: the inverse
  (``k.T.reshape(k.shape, order='C')``, ``r.T``, LSTM bias ``np.tile(0.5 * b, 2)``, GRU bias flattened).

Keras 3 (``keras/src/legacy/saving/legacy_h5_format.py``) converts nothing and refuses the shapes; kconv
follows Keras 2, whose files these are. The converted weight is what the loaded Keras model holds:
its shape, and so the parameter counts, are Keras's; ``kconv inspect`` shows the stored shape and the
conversion in the weight's note.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..transforms import Reshape, Transform

N_GATES = {"LSTM": 4, "CuDNNLSTM": 4, "GRU": 3, "CuDNNGRU": 3}
SOURCE = "Keras 2 _convert_rnn_weights"


@dataclass(frozen=True)
class PerGate(Transform):
    """Keras's ``transform_kernels``: split the last axis into gate blocks, transform each, stack them."""

    gates: int
    op: str  # 'from_cudnn': k.T.reshape(k.shape, order='F'); 'to_cudnn': order 'C'; 'T': k.T

    def _one(self, k):
        if self.op == "T":
            return k.T
        return k.T.reshape(k.shape, order="F" if self.op == "from_cudnn" else "C")

    def apply(self, a):
        return np.ascontiguousarray(np.hstack([self._one(k) for k in np.hsplit(a, self.gates)]))

    def shape(self, shape):
        return tuple(shape)

    def describe(self):
        if self.op == "T":
            return f"each of the {self.gates} gate blocks r -> r.T"
        order = "F" if self.op == "from_cudnn" else "C"
        return f"each of the {self.gates} gate blocks k -> k.T.reshape(k.shape, order='{order}')"


@dataclass(frozen=True)
class SumHalves(Transform):
    """CuDNNLSTM bias (8u,) -> LSTM bias (4u,): ``np.sum(np.split(b, 2), axis=0)``."""

    def apply(self, a):
        return np.sum(np.split(a, 2, axis=0), axis=0)

    def shape(self, shape):
        return (shape[0] // 2,)

    def describe(self):
        return "sum of the two halves (input + recurrent biases)"


@dataclass(frozen=True)
class TileHalves(Transform):
    """LSTM bias (4u,) -> CuDNNLSTM bias (8u,): ``np.tile(0.5 * b, 2)``."""

    def apply(self, a):
        return np.tile(0.5 * a, 2)

    def shape(self, shape):
        return (2 * shape[0],)

    def describe(self):
        return "0.5 * b twice (input and recurrent biases)"


class Converted:
    """A stored weight seen through Keras's load-time conversion; looks like the h5py dataset it
    replaces (shape, dtype, ``[()]``). The dataset itself was checked by h5safe before."""

    prechecked = True

    def __init__(self, ds, transform: Transform, note: str):
        self.attrs: dict = {}
        self.ds, self.transform = ds, transform
        self.dtype = ds.dtype
        self.stored_shape = tuple(int(d) for d in ds.shape)
        self.shape = tuple(transform.shape(self.stored_shape))
        self.note = note

    def __getitem__(self, key):
        return np.asarray(self.transform.apply(np.asarray(self.ds[()])))[key]


def _shape(ds) -> tuple:
    return tuple(int(d) for d in ds.shape)


def _plan(target: str, cfg: dict, shapes: list) -> tuple[str, tuple] | None:
    """(source class, (kernel, recurrent, bias transforms)) when Keras converts these shapes for
    ``target``; None when it leaves them alone. Raises ValueError with Keras's own message where
    Keras refuses."""
    n = N_GATES[target]
    k, r, b = shapes
    if len(r) != 2 or len(k) != 2 or r[0] == 0:
        return None  # not RNN weights as Keras stores them: left to the shape checks
    u = r[0]
    if k[1] != n * u or r[1] != n * u:
        return None
    if target in ("LSTM", "CuDNNLSTM"):
        if b == (2 * n * u,):
            source = "CuDNNLSTM"
        elif b == (n * u,):
            source = "LSTM"
        else:
            raise ValueError(f"Invalid bias shape: {b}")
        if source == target:
            return None
        if source == "CuDNNLSTM":
            return source, (PerGate(n, "from_cudnn"), PerGate(n, "T"), SumHalves())
        return source, (PerGate(n, "to_cudnn"), PerGate(n, "T"), TileHalves())
    if b == (2 * n * u,):
        source = "CuDNNGRU"
    elif b == (2, n * u):
        source = "GRU(reset_after=True)"
    elif b == (n * u,):
        source = "GRU(reset_after=False)"
    else:
        raise ValueError(f"Invalid bias shape: {b}")
    if target == "CuDNNGRU":
        want = "CuDNNGRU"
    else:
        want = "GRU(reset_after=True)" if cfg.get("reset_after", True) else "GRU(reset_after=False)"
    if source == want:
        return None
    if "GRU(reset_after=False)" in (source, want):
        raise ValueError(f"{source} is not compatible with {want}")
    if source == "CuDNNGRU":
        return source, (PerGate(n, "from_cudnn"), PerGate(n, "T"), Reshape((2, -1)))
    return source, (PerGate(n, "to_cudnn"), PerGate(n, "T"), Reshape((-1,)))


def _convert_one(target: str, cfg: dict, stored: list, notes: list, problems: list, where: str) -> list:
    if target not in N_GATES or len(stored) != 3:
        return stored
    try:
        plan = _plan(target, cfg, [_shape(ds) for _, ds in stored])
    except ValueError as e:
        problems.append(f"{where}: {e} (Keras 2 refuses to load these weights into a {target})")
        return stored
    if plan is None:
        return stored
    source, transforms = plan
    out = []
    for (name, ds), t in zip(stored, transforms):
        c = Converted(ds, t, "")
        c.note = f"stored {_fmt(c.stored_shape)} by {source}; Keras 2 converts it on load: {t.describe()}"
        out.append((name, c))
    notes.append(f"weights written by {source} (bias {_fmt(_shape(stored[2][1]))}) converted to {target} as "
                 f"Keras 2 does on load ({SOURCE})")
    return out


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def convert(layer, stored: list, problems: list) -> list:
    """``stored`` [(name, dataset)] of one layer in the file's order, converted where Keras 2 converts
    (an LSTM/GRU/CuDNN layer, or the two halves of a Bidirectional around one); anything else is
    returned unchanged. Keras's refusals are added to ``problems``."""
    cls, cfg = layer.class_name, layer.config
    where = f"layer {layer.name!r} ({cls})"
    if cls in N_GATES:
        return _convert_one(cls, cfg, stored, layer.notes, problems, where)
    if cls != "Bidirectional" or not stored or len(stored) % 2:
        return stored
    # tf_keras convert_nested_bidirectional: first half forward_layer, second half backward_layer
    fwd = cfg.get("layer") if isinstance(cfg.get("layer"), dict) else {}
    bwd = cfg.get("backward_layer") if isinstance(cfg.get("backward_layer"), dict) else fwd
    half = len(stored) // 2
    out = []
    for sub, part, side in ((fwd, stored[:half], "forward"), (bwd, stored[half:], "backward")):
        notes: list = []
        out += _convert_one(str(sub.get("class_name")), sub.get("config") or {}, part, notes, problems,
                            f"{where}, {side} layer")
        layer.notes.extend(f"{side} layer: {n}" for n in notes)
    return out
