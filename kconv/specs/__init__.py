"""Layer declarations: one per Keras layer class (or family of classes).

A declaration says, once, what a layer stores (weights in storage order, when each exists, its
role, trainable or not), how its output shape follows from its config and input shapes, and how it
becomes PyTorch (the torch tensor each weight becomes, by which transform, and the emitted code).
The inspector, the converter and ``kconv layers`` all read these declarations.

Family modules register themselves on import; ``registry()`` imports them all, ``get()`` those it needs.
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
        t = self.transform
        if callable(t) and not isinstance(t, Transform):
            t = t(cfg)
        return [(self.torch, t)]


WeightList = Union[Sequence[WeightDecl], Callable[[dict], Sequence[WeightDecl]]]


# --- enum-like config values: the sets Keras accepts -----------------------------------------------
# A value outside these sets is one Keras itself rejects when it builds the layer; kconv refuses it
# (ConfigError, exit 2) instead of treating it as a default. Sources, keras-team/keras keras/src/:
# utils/argument_validation.py standardize_padding, backend/config.py standardize_data_format,
# activations/__init__.py ALL_OBJECTS_DICT, backend/common/dtypes.py ALLOWED_DTYPES,
# dtype_policies/__init__.py get; tf-keras 2 utils/conv_utils.py normalize_padding and
# utils/image_utils.py _TF_INTERPOLATION_METHODS for what older files may hold.
PADDING = ("valid", "same")
PADDING_CAUSAL = ("valid", "same", "causal")  # Conv1D only (base_conv.py: allow_causal=rank == 1)
DATA_FORMAT = ("channels_last", "channels_first")
# keras/src/activations/__init__.py ALL_OBJECTS (function names) + the aliases swish, hard_swish;
# tf.keras 2 and Keras 1 names are all among them.
ACTIVATIONS = (
    "relu", "leaky_relu", "relu6", "softmax", "celu", "elu", "selu", "softplus", "softsign", "squareplus",
    "soft_shrink", "sparse_plus", "silu", "gelu", "glu", "tanh", "tanh_shrink", "threshold", "sigmoid",
    "sparse_sigmoid", "exponential", "hard_sigmoid", "hard_silu", "hard_tanh", "hard_shrink", "linear", "mish",
    "log_softmax", "log_sigmoid", "sparsemax", "swish", "hard_swish",
)
# keras/src/backend/common/dtypes.py ALLOWED_DTYPES, the Python-type aliases standardize_dtype maps
# ('int', 'float'), TensorFlow's aliases tf.keras 2 files may carry ('half', 'double'), and the
# mixed-precision policies (dtype_policies.get): the compute/variable dtype of a layer.
DTYPES = (
    "float16", "float32", "float64", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "bfloat16", "bool", "string", "float8_e4m3fn", "float8_e5m2", "complex64", "complex128",
    "int", "float", "half", "double", "mixed_float16", "mixed_bfloat16",
)
QUANTIZATION_MODES = ("int8", "int4", "float8", "gptq", "awq")  # keras/src/dtype_policies/dtype_policy.py


def activation_name(value) -> str:
    """The activation a config value names ('linear' for None)."""
    if value is None:
        return "linear"
    if isinstance(value, dict):  # Keras 3 may serialise {"class_name": "function", "config": "relu"}
        cfg = value.get("config")
        value = cfg if isinstance(cfg, str) else value.get("class_name", "")
    return str(value)


def _activation_value(v):
    """The built-in activation name a config value stands for, or None where it is not a name (a
    custom object's serialization: Keras needs custom_objects for it; the converter reports it)."""
    if isinstance(v, dict):  # Keras 3: {"class_name": "function", "config": "relu", ...}
        return v.get("config") if v.get("class_name") == "function" and isinstance(v.get("config"), str) else None
    return v


@dataclass(frozen=True)
class Choice:
    """The values Keras accepts for one config key. ``None`` in ``values`` allows a null; ``read``
    picks the part of a value to check (None: nothing to check, e.g. a custom activation object)."""

    values: tuple
    read: Optional[Callable] = None

    def bad(self, value) -> bool:
        v = self.read(value) if self.read else value
        if v is None and self.read is not None:
            return False
        return not isinstance(v, (str, type(None))) or v not in self.values


#: Config keys whose meaning and accepted values are the same in every layer class that has them.
COMMON_CHOICES = {
    "data_format": Choice(DATA_FORMAT + (None,)),
    "activation": Choice(ACTIVATIONS + (None,), read=_activation_value),
    "recurrent_activation": Choice(ACTIVATIONS + (None,), read=_activation_value),
    "dtype": Choice(DTYPES),  # after kconv.load.config normalised the dtype policy to its name
    "quantization_mode": Choice(QUANTIZATION_MODES, read=lambda v: v.split("/")[0] if isinstance(v, str) else v),
}


@dataclass
class LayerSpec:
    """Everything kconv knows of one Keras layer class (or family of classes): see the module docstring."""

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
    # Enum-like config keys of this class and the values Keras accepts (COMMON_CHOICES apply to every
    # class); anything else is refused when the file is loaded (kconv.load.validate).
    choices: dict = field(default_factory=dict)
    # Call arguments that change what a call computes (Bidirectional's return_state, ReversibleEmbedding's
    # reverse): the shape rule and the emitter see them merged into the config of that call.
    call_kwargs: tuple = ()
    # Config keys Keras cannot build the layer without (its constructor's required arguments): a file
    # lacking one is refused when it is loaded (kconv.load.validate), as Keras's from_config would.
    required: tuple = ()
    # Keras masks (the (batch, time) mask that travels with a tensor; keras/src/layers/layer.py:
    # supports_masking / compute_mask). ``uses_mask``: call() uses the incoming mask at inference, so
    # the emitter must read it (Emit.mask) or masked input is refused, never silently ignored.
    # ``output_mask``: the mask of output 0 when the emitter sets none: "keep" (the first input's:
    # supports_masking with the default compute_mask), "merge" (merge layers, see kconv.emit.codegen),
    # or "" (none; an incoming mask stops here).
    uses_mask: bool = False
    output_mask: str = ""
    # (cfg) -> (class name, config) of a declared class that computes the same function from the same
    # weights (CuDNNLSTM: LSTM(tanh, sigmoid)); wrappers (Bidirectional) convert the layer as that class.
    same_as: Optional[Callable[[dict], tuple]] = None

    def all_choices(self) -> dict:
        return {**COMMON_CHOICES, **self.choices}

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


_IMPORTED: set = set()  # the FAMILIES imported (or being imported) by _import_families


def _import_families(until: Optional[str] = None):
    """Import the family modules in order, all of them or until one declares ``until``."""
    global _LOADED
    for fam in FAMILIES:
        if fam in _IMPORTED:
            continue
        _IMPORTED.add(fam)  # first: a family that looks a class up while it is imported does not import it again
        importlib.import_module(f"{__name__}.{fam}")
        if until is not None and until in _REGISTRY:
            return
    _LOADED = True


def registry() -> dict[str, LayerSpec]:
    if not _LOADED:
        _import_families()
    return _REGISTRY


def get(class_name: str) -> Optional[LayerSpec]:
    """The declaration of ``class_name``. Family modules are imported until one declares it: a model
    of common layers needs a few of them (``kconv inspect``'s start-up); a class is declared once."""
    spec = _REGISTRY.get(class_name)
    if spec is None and not _LOADED:
        _import_families(until=class_name)
        spec = _REGISTRY.get(class_name)
    return spec


def unregister(*class_names: str) -> None:
    """Forget declarations (an extension's, when its command ends); the family modules stay as they are."""
    for name in class_names:
        _REGISTRY.pop(name, None)


def check_choices(class_name: str, cfg: dict):
    """[(key, value, accepted values)] for every enum-like config value of a declared class that Keras
    would reject; empty when all are fine (or the class is not declared)."""
    spec = get(class_name)
    if spec is None:
        return []
    return [(k, cfg[k], c.values) for k, c in spec.all_choices().items() if k in cfg and c.bad(cfg[k])]


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
