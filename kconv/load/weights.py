"""Attach stored weights to the layers of a Model, matching them to the layer declarations.

Two layouts (DESIGN.md §3):
- legacy HDF5: per layer group, attribute ``weight_names`` gives names and order; role = last name part.
- Keras 3 ``model.weights.h5``: ``layers/<object name>/vars/<i>``, no names; order = declaration order.
Datasets are not read here: shapes and dtypes come from the HDF5 metadata, data on ``Weight.read()``.
"""
from __future__ import annotations

import re

import warnings

from .. import specs
from ..errors import KconvError, ModelFileError, NonFiniteWeightWarning, WeightMismatchError
from ..ir import Layer, Model, Weight
from . import h5safe, keras1
from .limits import DEFAULT, Limits


class Context:
    """What the attach functions share: the file (for messages), the limits, the problems found."""

    def __init__(self, path: str, limits: Limits = DEFAULT):
        self.path = str(path)
        self.limits = limits
        self.problems: list[str] = []

    def raise_problems(self):
        if self.problems:
            raise WeightMismatchError(self.problems, path=self.path)


def _text(v) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


_DTYPE_NAMES: dict = {}  # numpy dtype -> its name (numpy builds the name at each str(): 10 us)


def _dtype(ds) -> str:
    dt = ds.dtype
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        name = _DTYPE_NAMES[dt] = str(dt)
    return name


def _reader(ds, path: str, name: str):
    """Reads the dataset on demand; damage found only now (truncated data) becomes a ModelFileError,
    and non-finite values a NonFiniteWeightWarning."""

    def read():
        import numpy as np

        try:
            data = ds[()]
        except KconvError:
            raise
        except Exception as e:  # h5py raises OSError, RuntimeError, ValueError... for damaged data
            raise ModelFileError(path, f"weight {name}: data unreadable ({type(e).__name__}: {e})") from e
        if ds.dtype.kind == "V" and ds.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
            try:
                import ml_dtypes

                data = np.asarray(data).view(ml_dtypes.bfloat16)
            except ImportError:  # pragma: no cover - ml_dtypes is optional
                raise ModelFileError(path, f"weight {name}: bfloat16 data needs the ml_dtypes package") from None
        warn_nonfinite(data, path, name)
        return data

    return read


def nonfinite_counts(data) -> tuple[int, int]:
    """(NaN count, Inf count) of an array; (0, 0) for integer data."""
    import numpy as np

    a = np.asarray(data)
    if a.dtype.kind not in "fc":
        try:
            a = a.astype(np.float32)  # bfloat16 and friends
        except (TypeError, ValueError):
            return 0, 0
        if a.dtype.kind not in "fc":
            return 0, 0
    return int(np.isnan(a).sum()), int(np.isinf(a).sum())


def warn_nonfinite(data, path, name):
    nan, inf = nonfinite_counts(data)
    if nan or inf:
        warnings.warn(NonFiniteWeightWarning(f"{path}: weight {name} holds {nan} NaN and {inf} Inf value(s)"),
                      stacklevel=3)


def _key_of_name(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


# --------------------------------------------------------------------------------------------------
# Matching stored tensors to declarations

def assign(layer: Layer, stored: list[tuple[str, object]], by_name: bool, trainable_scope: bool,
           ctx: Context, key_of=None):
    """Give ``layer`` its weights from ``stored`` [(name, dataset)], with roles from its declaration.

    ``by_name``: match on the last name component (legacy HDF5), or on ``key_of(name)`` when given
    (Keras 1 names); otherwise by position (.keras).
    Problems (missing, unexpected weights) are added to ``ctx.problems``.
    """
    _key_of = key_of or _key_of_name
    for n, ds in stored:
        if not getattr(ds, "prechecked", False):  # not an HDF5 dataset (assembled parts, checkpoint tensors)
            h5safe.check_dataset(ds, ctx.limits, n)
    spec = specs.get(layer.class_name)
    cfg = layer.config
    trainable_layer = trainable_scope and layer.trainable
    if spec is None:
        # Unknown class: show what is stored, roles from the stored names where there are any.
        layer.weights = [
            Weight(name=n, key=_key_of(n), role=_key_of(n) if by_name else "unknown", shape=tuple(ds.shape),
                   dtype=_dtype(ds), trainable=trainable_layer, reader=_reader(ds, ctx.path, n),
                   note="unknown layer class: role from the stored name, trainable assumed")
            for n, ds in stored
        ]
        return
    decls = spec.weight_decls(cfg)
    weights: list[Weight | None] = [None] * len(decls)
    problems = []
    if by_name:
        for n, ds in stored:
            key = _key_of(n)
            slot = next((i for i, d in enumerate(decls) if weights[i] is None and d.key == key), None)
            if slot is None:
                slot = next((i for i, d in enumerate(decls) if weights[i] is None and key in d.aliases), None)
            if slot is None:
                problems.append(f"unexpected weight {n!r} {tuple(ds.shape)}")
                continue
            weights[slot] = _weight(n, ds, decls[slot], cfg, trainable_layer, ctx)
        if problems and len(stored) == len(decls):
            # Keras's HDF5 loader never reads these names: it pairs a layer's stored weights with its
            # variables by position (legacy order: trainable ones, then the others). Names that do not
            # name the attribute (ConvNeXt LayerScale's 'variable', a renamed Keras 1 layer's
            # 'dense_1_W', TensorFlow's uniquified 'conv_W_1') are read that way too.
            order = _legacy_order(decls, cfg)
            weights = [None] * len(decls)
            for (n, ds), i in zip(stored, order):
                weights[i] = _weight(n, ds, decls[i], cfg, trainable_layer, ctx)
            problems = []
            layer.notes.append("weights paired by position, as Keras's HDF5 loader does (the stored names "
                               f"{', '.join(repr(n) for n, _ in stored)} do not all name the attributes)")
    else:
        if len(stored) > len(decls):
            for n, ds in stored[len(decls):]:
                problems.append(f"unexpected weight {n!r} {tuple(ds.shape)}")
        for i, (n, ds) in enumerate(stored[: len(decls)]):
            weights[i] = _weight(n, ds, decls[i], cfg, trainable_layer, ctx)
    for i, d in enumerate(decls):
        if weights[i] is None:
            synthetic = _synthesize(layer, d, weights, trainable_layer)
            if synthetic is not None:
                weights[i] = synthetic
            else:
                problems.append(f"missing weight {d.key!r}")
    ctx.problems.extend(f"layer {layer.name!r} ({layer.class_name}): {p}" for p in problems)
    layer.weights = [w for w in weights if w is not None]


def _legacy_order(decls, cfg) -> list[int]:
    """Declaration indices in the order Keras writes a layer's weights to HDF5 (``_legacy_weights``:
    ``trainable_weights + non_trainable_weights``). A frozen layer lists the same order (its
    non_trainable_weights are ``_trainable_weights + _non_trainable_weights`` in Keras 2, tf.keras 2
    and Keras 3 alike)."""
    idx = range(len(decls))
    return [i for i in idx if decls[i].trainable_for(cfg)] + [i for i in idx if not decls[i].trainable_for(cfg)]


def _weight(name, ds, decl, cfg, trainable_layer, ctx) -> Weight:
    return Weight(name=name, key=decl.key, role=decl.role_name, shape=tuple(int(d) for d in ds.shape),
                  dtype=_dtype(ds), trainable=trainable_layer and decl.trainable_for(cfg),
                  reader=_reader(ds, ctx.path, name), note=getattr(ds, "note", ""),
                  stored_shape=getattr(ds, "stored_shape", None))


def _converted_rnn(layer: Layer, stored, ctx: Context):
    """CuDNN-layout RNN weights under an LSTM/GRU architecture (or the reverse): as Keras 2 loads them."""
    cls = layer.class_name
    if cls != "Bidirectional" and "LSTM" not in cls and "GRU" not in cls:  # before importing kconv.load.cudnn
        return stored
    from . import cudnn

    if cls not in cudnn.N_GATES and cls != "Bidirectional":
        return stored
    for n, ds in stored:
        h5safe.check_dataset(ds, ctx.limits, n)
    return cudnn.convert(layer, stored, ctx.problems)


def _synthesize(layer, decl, weights, trainable_layer):
    """LoRA factors are not stored in .keras files (merged into the kernel or embeddings on save):
    lora_<base>_a has the base's shape with the last axis replaced by the rank, lora_<base>_b is
    (rank, last axis of the base) (keras/src/layers/*: enable_lora)."""
    m = re.fullmatch(r"lora_(\w+)_(a|b)", decl.key)
    if m is None:
        return None
    base = next((w for w in weights if w is not None and w.key == m.group(1)), None)
    if base is None or not base.shape:
        return None
    try:
        rank = int(layer.config["lora_rank"])
    except (TypeError, ValueError, OverflowError):
        return None
    shape = (*base.shape[:-1], rank) if m.group(2) == "a" else (rank, base.shape[-1])
    return Weight(name=f"{layer.name}/{decl.key}", key=decl.key, role=decl.role_name, shape=shape,
                  dtype="float32", trainable=trainable_layer and decl.trainable_for(layer.config), reader=None,
                  note=f"not stored: Keras merged LoRA into the {m.group(1)} on save (recreated as zeros)")


# --------------------------------------------------------------------------------------------------
# Keras 3 .keras weights file

def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


MAX_DEPTH = 32  # sub-object nesting in model.weights.h5 (Keras nests a few levels)


def _vars_in(group, order: tuple, ctx: Context, depth: int = 0) -> list[tuple[str, object]]:
    """Datasets of an object group: own vars/0..n, then sub-objects (in ``order`` first, then by name)."""
    import h5py

    if depth > MAX_DEPTH:
        raise ModelFileError(ctx.path, f"{group.name}: sub-objects nested deeper than {MAX_DEPTH} levels")
    if not isinstance(group, h5py.Group):
        raise ModelFileError(ctx.path, f"{group.name}: a dataset where a layer group was expected")
    out = []
    if h5safe.has(group, "vars"):
        v = h5safe.child(group, "vars")
        if not isinstance(v, h5py.Group):
            raise ModelFileError(ctx.path, f"{v.name}: a dataset where the group of variables was expected")
        for i in range(len(v)):
            ds = h5safe.child(v, str(i), missing_ok=True)
            if ds is None:
                ctx.problems.append(f"{v.name}: variable {i} missing (the group has {len(v)} members)")
                continue
            out.append((f"{v.name.lstrip('/')}/{i}", ds))
    subs = [k for k in h5safe.keys(group) if k not in ("vars", "layers")]
    subs = [k for k in order if k in subs] + sorted(k for k in subs if k not in order)
    for k in subs:
        out.extend(_vars_in(h5safe.child(group, k), (), ctx, depth + 1))
    return out


def attach_keras3(model: Model, group, ctx: Context, trainable_scope: bool = True, depth: int = 0,
                  by_path: bool = False):
    """``by_path``: find each layer's group only by its path (``layers/<snake_case class>[_<n>]``), as
    Keras 3's ``load_weights`` does (saving_lib ``H5IOStore.get``), not by the layer name Keras also
    records there: a ``.weights.h5`` read with an architecture rebuilt elsewhere (other auto-names,
    which may be other layers' names in the file). A ``.keras`` archive's names are its own config's."""
    import h5py

    if depth > MAX_DEPTH:
        raise ModelFileError(ctx.path, f"models nested deeper than {MAX_DEPTH} levels")
    layers = model.layers
    saved = [ly for ly in layers if not (model.class_name == "Sequential" and ly.class_name == "InputLayer")]
    lgroup = h5safe.child(group, "layers", missing_ok=True)
    if lgroup is not None and not isinstance(lgroup, h5py.Group):
        raise ModelFileError(ctx.path, f"{lgroup.name}: a dataset where the group of layers was expected")
    by_attr = {}
    if lgroup is not None:
        for k in h5safe.keys(lgroup):
            g = h5safe.child(lgroup, k)
            v = h5safe.child(g, "vars", missing_ok=True) if isinstance(g, h5py.Group) else None
            if v is not None and "name" in v.attrs:
                by_attr[_text(v.attrs["name"])] = g
    counters: dict[str, int] = {}
    for layer in saved:
        base = _snake(layer.class_name)
        if base in counters:
            counters[base] += 1
            slot = f"{base}_{counters[base]}"
        else:
            counters[base] = 0
            slot = base
        g = None if by_path else by_attr.get(layer.name)
        if g is None and lgroup is not None and h5safe.has(lgroup, slot):
            g = h5safe.child(lgroup, slot)
        if layer.model is not None:
            if g is not None and layer.wraps_model:  # layers/time_distributed/layer/layers/...
                g = h5safe.child(g, "layer", missing_ok=True)
            if g is None:
                ctx.problems.append(f"nested model {layer.name!r}: no weights group in the file")
                continue
            attach_keras3(layer.model, g, ctx, trainable_scope and layer.trainable, depth + 1, by_path)
            continue
        spec = specs.get(layer.class_name)
        stored = _vars_in(g, spec.keras_subobjects if spec else (), ctx) if g is not None else []
        assign(layer, stored, by_name=False, trainable_scope=trainable_scope, ctx=ctx)


# --------------------------------------------------------------------------------------------------
# Legacy HDF5

def _names_attr(obj, key, ctx: Context) -> list[str]:
    import numpy as np

    names = h5safe.string_list_attr(obj, key)
    if names is not None:
        return names
    value = obj.attrs.get(key, [])
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "SUO"):
        raise ModelFileError(ctx.path, f"{obj.name}: attribute {key!r} is not a list of names")
    return [_text(n) for n in arr]


def _listed_weights(g, names, label: str, ctx) -> list:
    """[(name, dataset)] of the weights a legacy layer group lists; a listed but absent one is a problem."""
    stored, groups = [], {"": g}
    for n in names:
        # each member group opened once for its weights (a kernel and a bias share conv1/conv1)
        parent, _, leaf = str(n).rpartition("/")
        if parent not in groups:
            groups[parent] = h5safe.child(g, parent, missing_ok=True)
        ds = h5safe.child(groups[parent], leaf, missing_ok=True) if groups[parent] is not None else None
        if ds is None:
            ctx.problems.append(f"layer {label!r}: weight {n!r} listed but missing")
            continue
        stored.append((n, ds))
    return stored


def attach_legacy(model: Model, wgroup, ctx: Context):
    """``wgroup``: the group holding ``layer_names`` (``model_weights``, or the root of a weights file)."""
    import h5py

    path = ctx.path
    if "layer_names" not in wgroup.attrs:
        raise ModelFileError(path, f"{wgroup.name}: no 'layer_names' attribute (not a Keras weights group)")
    stored_layers = set(_names_attr(wgroup, "layer_names", ctx))
    for layer in model.layers:
        if layer.name not in stored_layers:
            # Keras 3 ops in a functional graph (NotEqual for a mask ...) are not layers: never stored.
            if layer.class_name == "InputLayer" or (layer.model is None and not _expects_weights(layer)):
                continue
            ctx.problems.append(f"layer {layer.name!r}: not in the file's layer_names")
            continue
        g = h5safe.child(wgroup, layer.name, missing_ok=True)
        if g is None:
            ctx.problems.append(f"layer {layer.name!r}: listed in layer_names but its group is missing")
            continue
        if not isinstance(g, h5py.Group):
            raise ModelFileError(path, f"{g.name}: a dataset where the layer's group was expected")
        names = _names_attr(g, "weight_names", ctx)
        stored = _listed_weights(g, names, layer.name, ctx)
        if layer.model is not None:
            _distribute(layer, stored, ctx)
        elif _keras1_layer(layer):
            _assign_keras1(layer, stored, ctx)
        else:
            assign(layer, _converted_rnn(layer, stored, ctx), by_name=True, trainable_scope=True,
                   ctx=ctx)


def attach_legacy_by_order(model: Model, wgroup, ctx: Context):
    """Keras's ``model.load_weights(h5)`` with ``by_name=False`` (its default), for a weights-only file
    read with an architecture that may name its layers differently (rebuilt from code: fresh
    auto-names). As ``load_weights_from_hdf5_group`` (tf_keras ``saving/legacy/hdf5_format.py``,
    Keras 3 ``legacy/saving/legacy_h5_format.py``, Keras 2.2 ``engine/saving.py``): the model's
    top-level layers that have weights are paired, in order, with the file's ``layer_names`` whose
    ``weight_names`` are not empty; a nested model is one layer there (its group holds all its
    weights, trainable ones first); a count mismatch is an error, as in Keras."""
    import h5py

    path = ctx.path
    if "layer_names" not in wgroup.attrs:
        raise ModelFileError(path, f"{wgroup.name}: no 'layer_names' attribute (not a Keras weights group)")
    saved = []
    for name in _names_attr(wgroup, "layer_names", ctx):
        g = h5safe.child(wgroup, name, missing_ok=True)
        if g is None:
            ctx.problems.append(f"layer_names lists {name!r} but its group is missing")
            continue
        if not isinstance(g, h5py.Group):
            raise ModelFileError(path, f"{g.name}: a dataset where the layer's group was expected")
        names = _names_attr(g, "weight_names", ctx)
        if names:
            saved.append((name, g, names))
    layers = [ly for ly in model.layers if ly.class_name != "InputLayer" and _has_weights(ly)]
    if len(saved) != len(layers):
        message = (f"Layer count mismatch when loading weights from file (as Keras reports it): the model has "
                   f"{len(layers)} layers with weights ({', '.join(ly.name for ly in layers) or 'none'}), the file "
                   f"{len(saved)} saved layers with weights ({', '.join(n for n, _, _ in saved) or 'none'}); "
                   "Keras pairs them in order (load_weights by_name=False). With --by-name they are paired by "
                   "name instead")
        raise WeightMismatchError([message], path=path)
    for k, ((name, g, names), layer) in enumerate(zip(saved, layers)):
        stored = _listed_weights(g, names, name, ctx)
        layer.stored_as = name
        expected = _count_expected(layer)
        if expected is not None and expected != len(stored):
            ctx.problems.append(
                f"Weight count mismatch for layer #{k} (named {layer.name!r} in the model, {name!r} in the "
                f"file): the layer expects {expected} weight(s), the file has {len(stored)}")
            continue
        if layer.model is not None:
            _distribute_by_order(layer, stored, ctx)
        elif _keras1_layer(layer):
            _assign_keras1(layer, stored, ctx)
        else:
            assign(layer, _converted_rnn(layer, stored, ctx), by_name=True, trainable_scope=True,
                   ctx=ctx)



def _has_weights(layer: Layer) -> bool:
    if layer.model is not None:
        return any(_has_weights(inner) for inner in layer.model.layers)
    return _expects_weights(layer)


def _count_expected(layer: Layer):
    """How many arrays Keras stores for the layer (None: not known, e.g. Keras 1 per-gate arrays)."""
    if layer.model is not None:
        counts = [_count_expected(inner) for inner in layer.model.layers if _has_weights(inner)]
        return None if any(c is None for c in counts) else sum(counts)
    inner = layer.config.get("layer")
    inner_cfg = inner.get("config") if isinstance(inner, dict) else None
    if layer.config.get("_keras1_gates") or (isinstance(inner_cfg, dict) and inner_cfg.get("_keras1_gates")):
        return None
    spec = specs.get(layer.class_name)
    return None if spec is None else len(spec.weight_decls(layer.config))


def _distribute_by_order(outer: Layer, stored, ctx: Context):
    """A nested model's group, paired in Keras's legacy order: the trainable weights of every inner
    layer in order, then the non-trainable ones (a frozen inner layer's all go there). A frozen nested
    model lists each inner layer's weights in turn in tf.keras 2 and Keras 3 (``non_trainable_weights``
    of a frozen layer: its variables, sub-layer by sub-layer; freezing reaches the inner configs).
    Standalone Keras 2 would still list the trainable ones first (keras/engine/network.py), but its
    configs never record a frozen nested model (``Sequential.get_config`` has no 'trainable')."""
    slots = []  # (leaf, decl index, trainable)
    leaves = list(_leaves(outer.model, outer.trainable))
    for leaf, t in leaves:
        spec = specs.get(leaf.class_name)
        if spec is None:
            ctx.problems.append(f"nested model {outer.name!r}: layer {leaf.name!r} of unknown class "
                                f"{leaf.class_name!r}: its weights cannot be paired by order")
            return
        decls = spec.weight_decls(leaf.config)
        for i in _legacy_order(decls, leaf.config):
            slots.append((leaf, i, t and leaf.trainable and decls[i].trainable_for(leaf.config)))
    if outer.trainable:
        slots = [s for s in slots if s[2]] + [s for s in slots if not s[2]]
    per_leaf: dict[str, list] = {leaf.name: [] for leaf, _ in leaves}
    for (leaf, i, _), item in zip(slots, stored):
        per_leaf[leaf.name].append((i, item))
    for leaf, t in leaves:
        ordered = [item for _, item in sorted(per_leaf[leaf.name], key=lambda p: p[0])]
        assign(leaf, _converted_rnn(leaf, ordered, ctx), by_name=False, trainable_scope=t, ctx=ctx)


def _keras1_layer(layer: Layer) -> bool:
    """A Keras 1 layer config, or a wrapper (Bidirectional, TimeDistributed) around one."""
    inner = layer.config.get("layer")
    return bool(layer.config.get("_keras1") or (isinstance(inner, dict) and isinstance(inner.get("config"), dict)
                                                 and inner["config"].get("_keras1")))


def _assign_keras1(layer: Layer, stored, ctx: Context):
    """Keras 1 names '<layer>_W', '<layer>_running_std' ...; LSTM/GRU per-gate arrays assembled first."""
    renamed = {}
    inner = layer.config.get("layer")
    if not layer.config.get("_keras1") and isinstance(inner, dict):
        # A Keras 1 wrapper: its arrays are the wrapped layer's, the backward copy's after the forward's
        # (Keras 2's preprocess_weights_for_loading splits them in halves the same way), each converted
        # as the wrapped layer's own (per-gate arrays assembled), then paired by position.
        import types

        for n, ds in stored:
            h5safe.check_dataset(ds, ctx.limits, n)
        cls, icfg = inner.get("class_name"), inner["config"]
        copies = 2 if layer.class_name == "Bidirectional" else 1
        half = len(stored) // copies
        out = []
        for k in range(copies):
            part = stored[k * half:(k + 1) * half]
            if icfg.get("_keras1_gates") and cls in keras1.GATES:
                part = keras1.gate_weights(types.SimpleNamespace(class_name=cls, name=str(icfg.get("name", ""))),
                                           part, layer.notes if k == 0 else [])
            out.extend(part)
        assign(layer, out, by_name=False, trainable_scope=True, ctx=ctx)
        for w in layer.weights:
            if "+" in w.name:
                w.note = "assembled from the Keras 1 per-gate arrays " + ", ".join(w.name.split("+"))
        return
    if layer.config.get("_keras1_gates") and layer.class_name in keras1.GATES:
        for n, ds in stored:
            h5safe.check_dataset(ds, ctx.limits, n)
        stored = keras1.gate_weights(layer, stored, layer.notes)
    assign(layer, stored, by_name=True, trainable_scope=True, ctx=ctx,
           key_of=lambda n: keras1.key_of(layer.class_name, layer.name, n))
    for w in layer.weights:
        if "+" in w.name:
            w.note = "assembled from the Keras 1 per-gate arrays " + ", ".join(w.name.split("+"))
        key = keras1.param_of(layer.name, w.name.split("+")[0])
        if key != w.key and "+" not in w.name:
            renamed[key] = w.key
    if renamed:
        layer.notes.append("weights: Keras 1 names " + ", ".join(f"{a} -> {b}" for a, b in renamed.items()))
    if renamed.get("running_std") == "moving_variance":
        layer.notes.append("running_std holds the variance (Keras 1 divides by sqrt(running_std + epsilon))")


def _expects_weights(layer: Layer) -> bool:
    spec = specs.get(layer.class_name)
    if spec is None:
        return not layer.config.get("_keras_op", False)
    return bool(spec.weight_decls(layer.config))


def _leaves(model: Model, trainable: bool):
    for layer in model.layers:
        if layer.model is not None:
            yield from _leaves(layer.model, trainable and layer.trainable)
        else:
            yield layer, trainable


def _distribute(outer: Layer, stored, ctx: Context):
    """A nested model's weights all sit in one group: give each to its inner layer by name."""
    leaves = list(_leaves(outer.model, outer.trainable))
    by_name = {layer.name: (layer, t) for layer, t in leaves}
    per_layer: dict[str, list] = {layer.name: [] for layer, _ in leaves}
    for n, ds in stored:
        parts = n.split("/")[:-1]
        owner = next((p for p in parts if p in by_name), None)
        if owner is None:
            ctx.problems.append(f"nested model {outer.name!r}: weight {n!r} belongs to no inner layer")
            continue
        per_layer[owner].append((n, ds))
    for layer, t in leaves:
        assign(layer, _converted_rnn(layer, per_layer[layer.name], ctx), by_name=True, trainable_scope=t, ctx=ctx)


# --------------------------------------------------------------------------------------------------
# Shapes: every stored weight against the shape its declaration says Keras creates it with

def _input_shape(by_name: dict, layer: Layer):
    """The shape of the first input of the layer's first call (None when unknown); ``by_name``:
    ``Model.layers_by_name()``."""
    try:
        ref = layer.calls[0].inputs[0]
        return by_name[ref.layer].calls[ref.node].output_shapes[ref.index]
    except (IndexError, KeyError, AttributeError, TypeError):
        return None


def _matches(found: tuple, expected: tuple) -> bool:
    return len(found) == len(expected) and all(e is None or f == e for f, e in zip(found, expected))


def _fmt(shape) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def check_shapes(model: Model, ctx: Context):
    """Add a problem to ``ctx`` for every stored weight whose shape differs from the declared one."""
    by_name = model.layers_by_name()
    for layer in model.layers:
        if layer.model is not None:
            check_shapes(layer.model, ctx)
            continue
        spec = specs.get(layer.class_name)
        if spec is None or not layer.weights:
            continue
        decls = spec.weight_decls(layer.config)
        in_shape = _input_shape(by_name, layer)
        used = [False] * len(decls)
        for w in layer.weights:
            for i, d in enumerate(decls):
                if not used[i] and d.key == w.key and d.role_name == w.role:
                    used[i] = True
                    break
            else:
                continue
            if d.shape is None or w.reader is None:
                continue
            try:
                expected = d.shape(layer.config, tuple(in_shape) if in_shape is not None else None)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError):
                continue  # a config the rule cannot read: other checks report it
            if expected is None:
                continue
            expected = tuple(expected)
            if not _matches(tuple(w.shape), expected):
                ctx.problems.append(f"layer {layer.name!r} ({layer.class_name}): weight {w.key!r} ({w.name}) "
                                    f"has shape {_fmt(tuple(w.shape))}, expected {_fmt(expected)}")
