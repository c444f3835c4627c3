"""The Keras 1 dialect: layer configs and stored weight names, normalised to the Keras 2/3 ones.

Everything here follows what Keras 2.2.4 itself does when it reads a Keras 1 file (read, not
guessed): the key renames are those of ``keras/legacy/interfaces.py`` (the ``legacy_support``
wrappers of each layer constructor), the weight conversions those of
``keras/engine/saving.py: preprocess_weights_for_loading`` (Keras 1 LSTM/GRU per-gate arrays ->
one kernel / recurrent_kernel / bias, in Keras 2 gate order). Theano-written kernels (true
convolutions) are not changed here: the loader only records the writer's backend in the config
(``_theano_kernels``, ``_theano_padding``) and the conv declarations flip them (kconv.specs.conv).

Every change is recorded in the layer's notes (``kconv inspect`` shows them as "normalised: ...").
"""
from __future__ import annotations

import re

from ..errors import ConfigError

# Keys that exist only in Keras 1 layer configs (for the classes listed, or any class).
_K1_ANY = frozenset((
    "input_dtype", "nb_filter", "nb_row", "nb_col", "nb_depth", "border_mode", "subsample", "dim_ordering",
    "inner_activation", "consume_less", "dropout_W", "dropout_U", "W_regularizer", "W_constraint", "init",
    "inner_init", "filter_length", "subsample_length", "pool_length", "atrous_rate", "kernel_dim1",
    "mode_type", "concat_axis", "dot_axes"))
_DROPOUTS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"}
_RNN = {"SimpleRNN", "LSTM", "GRU"}

# keras/legacy/interfaces.py conversions, grouped by the layer families that use them.
_COMMON = {"W_regularizer": "kernel_regularizer", "b_regularizer": "bias_regularizer",
           "W_constraint": "kernel_constraint", "b_constraint": "bias_constraint", "bias": "use_bias",
           "init": "kernel_initializer"}
_CONV = {**_COMMON, "nb_filter": "filters", "subsample": "strides", "border_mode": "padding",
         "dim_ordering": "data_format", "filter_length": "kernel_size", "subsample_length": "strides",
         "atrous_rate": "dilation_rate"}
_RENAMES = {
    "Dense": {**_COMMON, "output_dim": "units"},
    "Embedding": {"init": "embeddings_initializer", "W_regularizer": "embeddings_regularizer",
                  "W_constraint": "embeddings_constraint"},
    "RNN": {"output_dim": "units", "init": "kernel_initializer", "inner_init": "recurrent_initializer",
            "inner_activation": "recurrent_activation", "W_regularizer": "kernel_regularizer",
            "b_regularizer": "bias_regularizer", "U_regularizer": "recurrent_regularizer", "dropout_W": "dropout",
            "dropout_U": "recurrent_dropout", "consume_less": "implementation"},
    "Dropout": {"p": "rate"},
    "Pooling": {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding",
                "dim_ordering": "data_format"},
    "Spatial": {"dim_ordering": "data_format"},
    "UpSampling1D": {"length": "size"},
    "GaussianNoise": {"sigma": "stddev"},
    "PReLU": {"init": "alpha_initializer"},
    "Conv": _CONV,
    # legacy/interfaces.py legacy_convlstm2d_support
    "ConvLSTM": {"nb_filter": "filters", "subsample": "strides", "border_mode": "padding",
                 "dim_ordering": "data_format",
                 "inner_activation": "recurrent_activation", "init": "kernel_initializer",
                 "inner_init": "recurrent_initializer", "W_regularizer": "kernel_regularizer",
                 "U_regularizer": "recurrent_regularizer", "b_regularizer": "bias_regularizer",
                 "dropout_W": "dropout", "dropout_U": "recurrent_dropout"},
}
_DIM_ORDERING = {"tf": "channels_last", "th": "channels_first"}
_CONSUME_LESS = {"cpu": 0, "mem": 1, "gpu": 2}  # legacy/interfaces.py value_conversions
_CONV_CLASSES = {"Convolution1D", "Convolution2D", "Convolution3D", "AtrousConvolution1D", "AtrousConvolution2D",
                 "SeparableConvolution2D", "Conv1D", "Conv2D", "Conv3D", "SeparableConv2D"}
_CLASS_RENAMES = {"AtrousConvolution1D": "Conv1D", "AtrousConvolution2D": "Conv2D"}
_MERGE_CLASSES = {"sum": "Add", "mul": "Multiply", "ave": "Average", "max": "Maximum", "concat": "Concatenate",
                  "dot": "Dot"}


def _family(cls: str) -> str:
    if cls in _RNN:
        return "RNN"
    if cls == "ConvLSTM2D":
        return "ConvLSTM"
    if cls in _DROPOUTS:
        return "Dropout"
    if cls in _CONV_CLASSES:
        return "Conv"
    if "Pooling" in cls and not cls.startswith("Global"):
        return "Pooling"
    if cls.startswith(("GlobalMaxPooling", "GlobalAveragePooling", "ZeroPadding", "UpSampling2D", "UpSampling3D",
                       "Cropping")):
        return "Spatial"
    return cls


def is_keras1(cls: str, cfg: dict) -> bool:
    """Whether a layer config is in the Keras 1 dialect (only Keras 1 has these keys)."""
    if not isinstance(cfg, dict):
        return False
    if not _K1_ANY.isdisjoint(cfg):
        return True
    if cls in _DROPOUTS and "p" in cfg and "rate" not in cfg:
        return True
    if cls in ("Dense", *_RNN) and "output_dim" in cfg and "units" not in cfg:
        return True
    if cls == "BatchNormalization" and "mode" in cfg:
        return True
    return cls == "Merge"


def class_name(cls: str, cfg: dict, layer: str, notes: list) -> str:
    """Keras 1 classes that are Keras 2 classes under another name (Merge by its mode)."""
    if cls == "Merge":
        mode, mode_type = cfg.get("mode"), cfg.get("mode_type", "raw")
        if "layers" in cfg:
            raise ConfigError(layer, "config key 'layers': a Keras 1 Merge of Sequential models (Merge inside "
                                     "a Sequential config) is not read; rebuild it as a functional Model")
        if mode_type == "raw" and mode in _MERGE_CLASSES:
            new = _MERGE_CLASSES[mode]
            notes.append(f"Keras 1 Merge(mode={mode!r}) -> {new}")
            return new
        if mode_type == "raw" and mode != "cos":
            raise ConfigError(layer, f"config key 'mode' is {str(mode)[:40]!r}, not a Keras 1 Merge mode "
                                     f"({', '.join(sorted([*_MERGE_CLASSES, 'cos']))})")
        return "Merge"  # mode 'cos' or a Python function: kept as Merge (kconv.specs.legacy)
    if cls in _CLASS_RENAMES:
        notes.append(f"Keras 1 {cls} -> {_CLASS_RENAMES[cls]}")
        return _CLASS_RENAMES[cls]
    return cls


def _pair(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def normalize(cls: str, raw: dict, layer: str, notes: list) -> dict:
    """Keras 2 keys for a Keras 1 layer config (``cls``: the class after :func:`class_name`)."""
    cfg = dict(raw)
    done = []
    if "input_dtype" in cfg:
        cfg.setdefault("dtype", cfg["input_dtype"])
        del cfg["input_dtype"]
        done.append("input_dtype -> dtype")
    fam = _family(cls)
    quiet = 0
    for old, new in _RENAMES.get(fam, {}).items():
        if old in cfg:
            value = cfg.pop(old)
            if new not in cfg:
                cfg[new] = value
                if new.endswith(("_initializer", "_regularizer", "_constraint")):
                    quiet += 1  # training-only keys: counted, not listed
                else:
                    done.append(f"{old} -> {new}")
    if fam == "ConvLSTM":
        if "nb_row" in cfg:
            cfg["kernel_size"] = [cfg.pop("nb_row"), cfg.pop("nb_col")]
            done.append("nb_row, nb_col -> kernel_size")
        if cfg.pop("forget_bias_init", None) == "one":
            cfg["unit_forget_bias"] = True  # an initializer only (interfaces.py maps it so)
        cfg["_keras1_gates"] = True  # W_i, U_i, b_i, W_c ... (i, c, f, o), assembled on load
        if cfg.get("data_format") == "th":
            # (filters, in, rows, cols) per gate, which Keras 2's converter concatenates on the columns
            # axis before transposing (engine/saving.py): not even Keras reads these correctly
            raise ConfigError(layer, "config key 'dim_ordering' is 'th': a Keras 1 ConvLSTM2D in Theano's "
                                     "ordering is not read (Keras 2 itself converts its kernels wrongly)")
    if fam in ("Conv", "Pooling", "Spatial", "ConvLSTM"):
        df = cfg.get("data_format")
        if df in _DIM_ORDERING:
            cfg["data_format"] = _DIM_ORDERING[df]
        elif df is not None and df not in ("channels_last", "channels_first"):
            raise ConfigError(layer, f"config key 'dim_ordering' is {str(df)[:30]!r}, expected 'th' or 'tf'")
    if fam == "Conv":
        n = 1 if cls.endswith("1D") else 3 if cls.endswith("3D") else 2
        if n == 2 and "nb_row" in cfg:
            cfg["kernel_size"] = [cfg.pop("nb_row"), cfg.pop("nb_col")]
            done.append("nb_row, nb_col -> kernel_size")
        if n == 3 and "kernel_dim1" in cfg:
            cfg["kernel_size"] = [cfg.pop("kernel_dim1"), cfg.pop("kernel_dim2"), cfg.pop("kernel_dim3")]
            done.append("kernel_dim1..3 -> kernel_size")
        if n == 1:
            for k in ("kernel_size", "strides", "dilation_rate"):
                if isinstance(cfg.get(k), int):
                    cfg[k] = [cfg[k]]
            cfg.pop("input_dim", None)
            cfg.pop("input_length", None)
            # Keras 1.1+ Convolution1D kernel: (filter_length, 1, input_dim, nb_filter) (saving.py takes [:, 0])
            cfg["_keras1_conv1d_kernel"] = True
        if n >= 2 and cfg.get("data_format") == "channels_first" and cls not in ("SeparableConvolution2D",
                                                                                 "SeparableConv2D"):
            # Keras 1 'th' kernels are (filters, in, k...) (saving.py transposes them (2, 3, 1, 0))
            cfg["_kernel_layout"] = "channels_first"
        pad = cfg.get("padding")
        if pad not in (None, "valid", "same"):
            raise ConfigError(layer, f"config key 'border_mode' is {str(pad)[:30]!r}: only 'valid' and 'same' "
                                     "have a Keras 2 equivalent")
    if fam == "Pooling":
        for k in ("pool_size", "strides"):
            if cls.endswith("1D") and isinstance(cfg.get(k), int):
                cfg[k] = [cfg[k]]
    if fam == "RNN":
        impl = cfg.get("implementation")
        if isinstance(impl, str):
            if impl not in _CONSUME_LESS:
                raise ConfigError(layer, f"config key 'consume_less' is {impl[:30]!r}, expected cpu, mem or gpu")
            cfg["implementation"] = _CONSUME_LESS[impl]
            if impl != "gpu" and cls in ("LSTM", "GRU"):
                cfg["_keras1_gates"] = True  # per-gate arrays W_i, U_i, b_i, ... (assembled on load)
        if cls == "GRU":
            cfg.setdefault("reset_after", False)  # Keras 1 GRU: reset gate before U_h (recurrent.py step)
            if cfg.get("reset_after"):
                raise ConfigError(layer, "config key 'reset_after': not a Keras 1 GRU option")
        if cls == "LSTM" and "forget_bias_init" in cfg:
            cfg.pop("forget_bias_init")  # an initializer only; interfaces.py maps it to unit_forget_bias
        cfg.pop("input_dim", None)
        cfg.pop("input_length", None)
    if cls == "Embedding" and "dropout" in cfg:
        if cfg.pop("dropout"):
            done.append("Embedding dropout dropped (training only)")
    if cls == "BatchNormalization" and "mode" in cfg:
        mode = cfg.pop("mode")
        if mode != 0:
            raise ConfigError(layer, f"config key 'mode' is {str(mode)[:20]!r}: Keras 1 BatchNormalization modes 1 "
                                     "and 2 (sample-wise, batch statistics at inference) have no Keras 2 "
                                     "equivalent (Keras 2 refuses them too)")
        for k in ("gamma_regularizer", "beta_regularizer", "gamma_init", "beta_init"):
            cfg.pop(k, None)
        done.append("mode 0 dropped")
    if cls == "Dense":
        cfg.pop("input_dim", None)
    if cls in ("Concatenate", "Dot", "Add", "Multiply", "Average", "Maximum"):
        mode = raw.get("mode")
        axis = cfg.pop("concat_axis", -1)
        dot_axes = cfg.pop("dot_axes", -1)
        for k in ("mode", "mode_type", "output_shape", "output_shape_type", "output_mask", "output_mask_type",
                  "arguments"):
            cfg.pop(k, None)
        if mode == "concat":
            cfg["axis"] = axis
        if mode == "dot":
            cfg["axes"] = _pair(dot_axes)
            cfg["normalize"] = False
    if quiet:
        done.append(f"{quiet} initializer/regularizer/constraint key(s) renamed")
    if done:
        notes.append("Keras 1 config: " + ", ".join(done))
    cfg["_keras1"] = True
    return cfg


# --------------------------------------------------------------------------------------------------
# Stored weight names: '<layer>_<param>' (no '/', no ':0')

_PARAMS = {"W": "kernel", "b": "bias", "U": "recurrent_kernel", "gamma": "gamma", "beta": "beta",
           "running_mean": "moving_mean", "running_std": "moving_variance", "alphas": "alpha",
           "depthwise_kernel": "depthwise_kernel", "pointwise_kernel": "pointwise_kernel"}
_CLASS_PARAMS = {"Embedding": {"W": "embeddings"}}
# keras/engine/saving.py preprocess_weights_for_loading: Keras 1 per-gate arrays -> Keras 2 layout.
GATES = {"LSTM": ("i", "f", "c", "o"), "GRU": ("z", "r", "h"),  # Keras 2 order of the concatenated blocks
         "ConvLSTM2D": ("i", "f", "c", "o")}
_GATE_STORAGE = {"LSTM": ("i", "c", "f", "o"), "GRU": ("z", "r", "h"),  # Keras 1 order in the file
                 "ConvLSTM2D": ("i", "c", "f", "o")}


# Every weight name suffix Keras 1.2.2 gives (``name='{}_W'.format(self.name)`` in keras/layers/*.py),
# longest first so that 'W_i' wins over 'W'.
_SUFFIXES = sorted({"W", "b", "U", "gamma", "beta", "running_mean", "running_std", "alphas", "betas",
                    "depthwise_kernel", "pointwise_kernel", "W_carry", "b_carry", "t_left", "a_left", "t_right",
                    "a_right", *(f"{w}_{g}" for w in "WUb" for g in "icfozrh")}, key=len, reverse=True)


def param_of(layer_name: str, stored: str) -> str:
    """'convolution2d_1_W' -> 'W': the Keras 1 parameter a stored name ends with.

    The name was made from the layer's name *when the weight was created*: a layer renamed later (or
    a TensorFlow-backend name uniquified to 'dense_1_W_1') still ends with the parameter, so the
    known suffixes are matched rather than the current layer name.
    """
    base = stored.split("/")[-1].split(":")[0]
    prefix = layer_name + "_"
    if base.startswith(prefix) and base[len(prefix):] in _SUFFIXES:
        return base[len(prefix):]
    for candidate in (base, re.sub(r"_\d+$", "", base)):
        for suffix in _SUFFIXES:
            if candidate == suffix or candidate.endswith("_" + suffix):
                return suffix
    return base.removeprefix(prefix)


def key_of(cls: str, layer_name: str, stored: str) -> str:
    """The Keras 2 attribute a Keras 1 stored weight is (``kernel``, ``moving_variance`` ...)."""
    if "+" in stored:  # assembled per-gate arrays (gate_weights): 'lstm_1_W_i+lstm_1_W_f+...'
        p = param_of(layer_name, stored.split("+")[0]).split("_")[0]
    else:
        p = param_of(layer_name, stored)
    return _CLASS_PARAMS.get(cls, {}).get(p) or _PARAMS.get(p, p)


class Assembled:
    """A weight Keras 2 has as one array, stored by Keras 1 as per-gate arrays: concatenated on read.

    Looks like the h5py dataset it replaces (shape, dtype, ``[()]``); each part was checked as a
    dataset before.
    """

    attrs: dict = {}
    prechecked = True  # each part was checked by h5safe.check_dataset

    def __init__(self, parts: list, names: list):
        self.parts, self.names = parts, names
        first = parts[0]
        self.dtype = first.dtype
        self.shape = (*first.shape[:-1], sum(int(p.shape[-1]) for p in parts))

    def __getitem__(self, key):
        import numpy as np

        return np.concatenate([np.asarray(p[()]) for p in self.parts], axis=-1)[key]


def gate_weights(layer, stored: list, notes: list) -> list:
    """Keras 1 LSTM (12 arrays, i, c, f, o) / GRU (9 arrays, z, r, h) -> kernel, recurrent_kernel, bias.

    ``stored``: [(name, dataset)] as in the file. Returns [(name, dataset-like)] in Keras 2 layout;
    the names list the stored arrays joined by '+'. Anything else is returned unchanged.
    """
    cls = layer.class_name
    by_param = {param_of(layer.name, n): (n, ds) for n, ds in stored}
    gates = GATES[cls]
    out = []
    for w in ("W", "U", "b"):
        parts = [by_param.get(f"{w}_{g}") for g in gates]
        if any(p is None for p in parts):
            missing = [f"{w}_{g}" for g, p in zip(gates, parts) if p is None]
            raise ConfigError(layer.name, f"Keras 1 {cls} without the per-gate weights {', '.join(missing)} "
                                          f"(stored: {', '.join(sorted(by_param))})")
        names = [n for n, _ in parts]
        out.append(("+".join(names), Assembled([ds for _, ds in parts], names)))
    extra = set(by_param) - {f"{w}_{g}" for w in "WUb" for g in gates}
    out.extend(by_param[p] for p in sorted(extra))
    notes.append(f"weights: Keras 1 per-gate arrays ({', '.join(_GATE_STORAGE[cls])} in the file) concatenated "
                 f"in Keras 2 gate order {', '.join(gates)} (as Keras 2's loader does)")
    return out
