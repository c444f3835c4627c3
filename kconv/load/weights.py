"""Attach stored weights to the layers of a Model, matching them to the layer declarations.

Two layouts (DESIGN.md §3):
- legacy HDF5: per layer group, attribute ``weight_names`` gives names and order; role = last name part.
- Keras 3 ``model.weights.h5``: ``layers/<object name>/vars/<i>``, no names; order = declaration order.
Datasets are not read here: shapes and dtypes come from the HDF5 metadata, data on ``Weight.read()``.
"""
from __future__ import annotations

import re

from .. import specs
from ..errors import ModelFileError, WeightMismatchError
from ..ir import Layer, Model, Weight


def _text(v) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def _dtype(ds) -> str:
    return str(ds.dtype)


def _reader(ds):
    return lambda: ds[()]


def _key_of(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


# --------------------------------------------------------------------------------------------------
# Matching stored tensors to declarations

def assign(layer: Layer, stored: list[tuple[str, object]], by_name: bool, trainable_scope: bool, where: str):
    """Give ``layer`` its weights from ``stored`` [(name, dataset)], with roles from its declaration.

    ``by_name``: match on the last name component (legacy HDF5); otherwise by position (.keras).
    """
    spec = specs.get(layer.class_name)
    cfg = layer.config
    trainable_layer = trainable_scope and layer.trainable
    if spec is None:
        # Unknown class: show what is stored, roles from the stored names where there are any.
        layer.weights = [
            Weight(name=n, key=_key_of(n), role=_key_of(n) if by_name else "unknown", shape=tuple(ds.shape),
                   dtype=_dtype(ds), trainable=trainable_layer, reader=_reader(ds),
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
            weights[slot] = _weight(n, ds, decls[slot], cfg, trainable_layer)
    else:
        if len(stored) > len(decls):
            for n, ds in stored[len(decls):]:
                problems.append(f"unexpected weight {n!r} {tuple(ds.shape)}")
        for i, (n, ds) in enumerate(stored[: len(decls)]):
            weights[i] = _weight(n, ds, decls[i], cfg, trainable_layer)
    for i, d in enumerate(decls):
        if weights[i] is None:
            synthetic = _synthesize(layer, d, weights, decls, trainable_layer)
            if synthetic is not None:
                weights[i] = synthetic
            else:
                problems.append(f"missing weight {d.key!r}")
    if problems:
        raise WeightMismatchError([f"{where}: layer {layer.name!r} ({layer.class_name}): {p}" for p in problems])
    layer.weights = [w for w in weights if w is not None]


def _weight(name, ds, decl, cfg, trainable_layer) -> Weight:
    return Weight(name=name, key=decl.key, role=decl.role_name, shape=tuple(ds.shape), dtype=_dtype(ds),
                  trainable=trainable_layer and decl.trainable_for(cfg), reader=_reader(ds))


def _synthesize(layer, decl, weights, decls, trainable_layer):
    """LoRA factors are not stored in .keras files (merged into the kernel on save)."""
    if decl.key not in ("lora_kernel_a", "lora_kernel_b"):
        return None
    kernel = next((w for w in weights if w is not None and w.key == "kernel"), None)
    if kernel is None:
        return None
    rank = int(layer.config["lora_rank"])
    shape = (kernel.shape[0], rank) if decl.key == "lora_kernel_a" else (rank, kernel.shape[-1])
    return Weight(name=f"{layer.name}/{decl.key}", key=decl.key, role=decl.role_name, shape=shape,
                  dtype=kernel.dtype, trainable=trainable_layer, reader=None,
                  note="not stored: Keras merged LoRA into the kernel on save (recreated with lora_kernel_b = 0)")


# --------------------------------------------------------------------------------------------------
# Keras 3 .keras weights file

def _snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
    return name


def _vars_in(group, order: tuple) -> list[tuple[str, object]]:
    """Datasets of an object group: own vars/0..n, then sub-objects (in ``order`` first, then by name)."""
    out = []
    if "vars" in group:
        v = group["vars"]
        for i in range(len(v)):
            if str(i) not in v:
                raise ModelFileError(group.file.filename, f"{v.name}: variable {i} missing")
            out.append((f"{v.name.lstrip('/')}/{i}", v[str(i)]))
    subs = [k for k in group.keys() if k not in ("vars", "layers")]
    subs = [k for k in order if k in subs] + sorted(k for k in subs if k not in order)
    for k in subs:
        out.extend(_vars_in(group[k], ()))
    return out


def attach_keras3(model: Model, group, trainable_scope: bool = True):
    layers = model.layers
    saved = [ly for ly in layers if not (model.class_name == "Sequential" and ly.class_name == "InputLayer")]
    lgroup = group["layers"] if "layers" in group else None
    by_attr = {}
    if lgroup is not None:
        for k in lgroup.keys():
            g = lgroup[k]
            if "vars" in g and "name" in g["vars"].attrs:
                by_attr[_text(g["vars"].attrs["name"])] = g
    counters: dict[str, int] = {}
    for layer in saved:
        base = _snake(layer.class_name)
        if base in counters:
            counters[base] += 1
            slot = f"{base}_{counters[base]}"
        else:
            counters[base] = 0
            slot = base
        g = by_attr.get(layer.name)
        if g is None and lgroup is not None and slot in lgroup:
            g = lgroup[slot]
        if layer.model is not None:
            if g is None:
                raise WeightMismatchError([f"nested model {layer.name!r}: no weights group in the file"])
            attach_keras3(layer.model, g, trainable_scope and layer.trainable)
            continue
        spec = specs.get(layer.class_name)
        stored = _vars_in(g, spec.keras_subobjects if spec else ()) if g is not None else []
        assign(layer, stored, by_name=False, trainable_scope=trainable_scope, where="model.weights.h5")


# --------------------------------------------------------------------------------------------------
# Legacy HDF5

def attach_legacy(model: Model, wgroup, path: str):
    """``wgroup``: the group holding ``layer_names`` (``model_weights``, or the root of a weights file)."""
    if "layer_names" not in wgroup.attrs:
        raise ModelFileError(path, f"{wgroup.name}: no 'layer_names' attribute (not a Keras weights group)")
    stored_layers = {_text(n) for n in wgroup.attrs["layer_names"]}
    for layer in model.layers:
        if layer.name not in stored_layers:
            # Keras 3 ops in a functional graph (NotEqual for a mask ...) are not layers: never stored.
            if layer.class_name == "InputLayer" or (layer.model is None and not _expects_weights(layer)):
                continue
            raise WeightMismatchError([f"layer {layer.name!r}: not in the file's layer_names"])
        g = wgroup[layer.name]
        names = [_text(n) for n in g.attrs.get("weight_names", [])]
        stored = []
        for n in names:
            if n not in g:
                raise WeightMismatchError([f"layer {layer.name!r}: weight {n!r} listed but missing"])
            stored.append((n, g[n]))
        if layer.model is not None:
            _distribute(layer, stored, path)
        else:
            assign(layer, stored, by_name=True, trainable_scope=True, where=path)


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


def _distribute(outer: Layer, stored, path):
    """A nested model's weights all sit in one group: give each to its inner layer by name."""
    leaves = list(_leaves(outer.model, outer.trainable))
    by_name = {layer.name: (layer, t) for layer, t in leaves}
    per_layer: dict[str, list] = {layer.name: [] for layer, _ in leaves}
    for n, ds in stored:
        parts = n.split("/")[:-1]
        owner = next((p for p in parts if p in by_name), None)
        if owner is None:
            raise WeightMismatchError([f"nested model {outer.name!r}: weight {n!r} belongs to no inner layer"])
        per_layer[owner].append((n, ds))
    for layer, t in leaves:
        assign(layer, per_layer[layer.name], by_name=True, trainable_scope=t, where=path)
