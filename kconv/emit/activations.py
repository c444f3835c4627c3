"""Keras built-in activations as torch expressions (read from keras/src/activations/activations.py).

``dim`` is the torch dim of Keras's axis -1 for the tensor at hand (softmax-like activations only).
"""
from __future__ import annotations

from ..errors import ConfigError
from ..specs import activation_name

ELEMENTWISE = {
    "linear": "{x}",
    "relu": "torch.relu({x})",
    "sigmoid": "torch.sigmoid({x})",
    "tanh": "torch.tanh({x})",
    "elu": "F.elu({x})",
    "selu": "F.selu({x})",
    "gelu": "F.gelu({x})",  # Keras 3 keras.activations.gelu defaults to approximate=False (exact)
    "silu": "F.silu({x})",
    "swish": "F.silu({x})",
    "softplus": "F.softplus({x}, threshold=1e9)",  # keras: log(exp(x) + 1), no linear cut-over
    "softsign": "F.softsign({x})",
    "exponential": "torch.exp({x})",
    "relu6": "F.relu6({x})",
    "leaky_relu": "F.leaky_relu({x}, 0.2)",  # keras.activations.leaky_relu default slope 0.2
    "hard_silu": "F.hardswish({x})",
    "hard_swish": "F.hardswish({x})",
    "mish": "F.mish({x})",
    "log_sigmoid": "F.logsigmoid({x})",
    "hard_tanh": "F.hardtanh({x})",
    "tanh_shrink": "F.tanhshrink({x})",
    "celu": "F.celu({x})",
}
# in-place forms (torchvision's ``inplace=True``) of those whose backward does not need the input
# it overwrites: the op's own output, or the input saved by autograd before the op writes
INPLACE = {
    "relu": "F.relu({x}, inplace=True)",
    "relu6": "F.relu6({x}, inplace=True)",
    "silu": "F.silu({x}, inplace=True)",
    "swish": "F.silu({x}, inplace=True)",
    "elu": "F.elu({x}, inplace=True)",
    "selu": "F.selu({x}, inplace=True)",
    "leaky_relu": "F.leaky_relu({x}, 0.2, inplace=True)",
    "hard_silu": "F.hardswish({x}, inplace=True)",
    "hard_swish": "F.hardswish({x}, inplace=True)",
    "mish": "F.mish({x}, inplace=True)",
    "hard_tanh": "F.hardtanh({x}, inplace=True)",
    "celu": "F.celu({x}, inplace=True)",
}
AXIS = {"softmax": "torch.softmax({x}, dim={dim})", "log_softmax": "torch.log_softmax({x}, dim={dim})"}


def hard_sigmoid(x: str, keras_major: int) -> str:
    if keras_major >= 3:
        return f"F.hardsigmoid({x})"  # Keras 3: relu6(x + 3) / 6
    return f"torch.clamp(0.2 * {x} + 0.5, 0.0, 1.0)"  # Keras 2 backend.hard_sigmoid


def supported(name: str) -> bool:
    return name in ELEMENTWISE or name in AXIS or name == "hard_sigmoid"


def expr(value, x: str, dim: int = -1, keras_major: int = 3, where: str = "", inplace: bool = False) -> str:
    """Activation ``value`` applied to the expression ``x``; ``inplace``: overwriting ``x`` is safe (the
    in-place form where torch has one)."""
    name = activation_name(value)
    if inplace and name in INPLACE:
        return INPLACE[name].format(x=x)
    if name in ELEMENTWISE:
        return ELEMENTWISE[name].format(x=x)
    if name in AXIS:
        return AXIS[name].format(x=x, dim=dim)
    if name == "hard_sigmoid":
        return hard_sigmoid(x, keras_major)
    raise ConfigError(where, f"activation {name!r} is not supported")


def function_source(names, keras_major: int = 3) -> str:
    """``keras_activation(name, x)``: the activations ``names`` as one module-level function of model.py.

    Recurrent modules take their activations by name (not as lambdas): the module pickles, deep-copies
    and scripts."""
    lines = ["def keras_activation(name: str, x: torch.Tensor) -> torch.Tensor:",
             '    """Keras activations by name (as keras/src/activations/activations.py)."""']
    for name in sorted(names):
        lines += [f'    if name == "{name}":', f"        return {expr(name, 'x', keras_major=keras_major)}"]
    lines += ['    raise ValueError("unknown activation " + name)', "", ""]
    return "\n".join(lines)
