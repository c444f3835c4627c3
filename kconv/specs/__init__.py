"""Layer declarations: one per Keras layer class (or family of classes).

A declaration says, once, what a layer stores (weights in storage order, when each exists, its
role, trainable or not), how its output shape follows from its config and input shapes, and how it
becomes PyTorch (the torch tensor each weight becomes, by which transform, and the emitted code).
The inspector, the converter and ``kconv layers`` all read these declarations.

Family modules register themselves on import; ``registry()`` imports them all.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

from ..transforms import IDENTITY, Transform

FAMILIES = (
    "core",
    "activation",
    "conv",
    "pooling",
    "normalization",
    "regularization",
    "reshaping",
    "merging",
    "recurrent",
    "attention",
    "ops",
    "applications",
    "legacy",
)


def always(cfg: dict) -> bool:
    return True


@dataclass(frozen=True)
class WeightDecl:
    """One weight a layer may store, in Keras's storage (variable creation) order."""

    key: str  # Keras attribute name: 'kernel', 'moving_variance'
    role: Optional[str] = None  # defaults to key
    when: Callable[[dict], bool] = always  # whether the layer has it, from its config
    trainable: Union[bool, Callable[[dict], bool]] = True
    torch: Union[None, str, Callable] = None  # torch parameter/buffer name in the emitted module (see targets)
    transform: Union[Transform, Callable[[dict], Transform]] = IDENTITY
    why_no_torch: str = ""  # when torch is None: what happens to it instead
    aliases: tuple = ()  # other stored names for the same weight (Keras versions disagree)
    # The shape Keras creates it with, from the layer config and the layer's (first) input shape:
    # (cfg, input_shape) -> tuple of int | None (None: not checked), or None when it cannot be told.
    # kconv.load compares it with the stored shape and reports every mismatch.
    shape: Optional[Callable[[dict, Optional[tuple]], Optional[tuple]]] = None

    def trainable_for(self, cfg: dict) -> bool:
        return self.trainable(cfg) if callable(self.trainable) else self.trainable

    @property
    def role_name(self) -> str:
        return self.role or self.key

    def targets(self, cfg: dict) -> list[tuple[str, Transform]]:
        """The torch tensors this weight becomes: [(torch name, transform)], empty if none.

        ``torch`` is a name (with ``transform``), or a callable of the config returning the list
        (one Keras weight may become several torch tensors, e.g. a GRU's two bias rows).
        """
        if self.torch is None:
            return []
        if callable(self.torch):
            return list(self.torch(cfg))
        t = self.transform(cfg) if callable(self.transform) and not isinstance(self.transform, Transform) else self.transform
        return [(self.torch, t)]


WeightList = Union[Sequence[WeightDecl], Callable[[dict], Sequence[WeightDecl]]]


@dataclass
class LayerSpec:
    class_names: tuple
    family: str
    summary: str
    weights: WeightList = ()
    output_shape: Optional[Callable] = None  # (cfg, list of input shapes) -> shape or list of shapes
    no_weights_reason: str = ""
    # Where a Keras 3 ``.keras`` file keeps the weights below the layer's own group, in order:
    # e.g. ('cell',) for RNNs, ('forward_layer', 'backward_layer') for Bidirectional.
    keras_subobjects: tuple = ()
    emit: Optional[Callable] = None  # converter hook, see kconv.emit
    notes: tuple = ()  # traps worth telling people (shown by `kconv layers` and verify hints)

    def weight_decls(self, cfg: dict) -> list[WeightDecl]:
        decls = self.weights(cfg) if callable(self.weights) else self.weights
        return [d for d in decls if d.when(cfg)]


_REGISTRY: dict[str, LayerSpec] = {}
_LOADED = False


def register(spec: LayerSpec) -> LayerSpec:
    for name in spec.class_names:
        if name in _REGISTRY:
            raise ValueError(f"layer class {name!r} declared twice")
        _REGISTRY[name] = spec
    return spec


def declare(*class_names: str, **kw) -> LayerSpec:
    return register(LayerSpec(class_names=tuple(class_names), **kw))


def registry() -> dict[str, LayerSpec]:
    global _LOADED
    if not _LOADED:
        for fam in FAMILIES:
            importlib.import_module(f"{__name__}.{fam}")
        _LOADED = True
    return _REGISTRY


def get(class_name: str) -> Optional[LayerSpec]:
    return registry().get(class_name)


def declared_weights(layer) -> list:
    """[(stored weight, its WeightDecl or None)] for a layer of the IR, in storage order.

    The loader gave each weight its declaration's key and role; this pairs them back (a key may repeat,
    e.g. Bidirectional's two kernels: each declaration is used once, in order).
    """
    spec = get(layer.class_name)
    decls = spec.weight_decls(layer.config) if spec else []
    used = [False] * len(decls)
    out = []
    for w in layer.weights:
        decl = None
        for i, d in enumerate(decls):
            if not used[i] and d.key == w.key and d.role_name == w.role:
                used[i] = True
                decl = d
                break
        out.append((w, decl))
    return out


def emits(*class_names: str):
    """Decorator attaching a converter hook to already declared classes (same family module)."""

    def attach(fn):
        for name in class_names:
            spec = _REGISTRY[name]
            if spec.emit is not None and spec.emit is not fn:
                raise ValueError(f"two converters for {name!r}")
            spec.emit = fn
        return fn

    return attach
