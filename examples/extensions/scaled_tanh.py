"""kconv extension for ScaledTanh (examples/extensions/keras_layers.py): weightless, a function.

    kconv convert fixtures/custom/scaled_tanh.keras -o out --extension examples/extensions/scaled_tanh.py
"""
import torch

from kconv.extend import layer


def scaled_tanh(x, config):
    return config["alpha"] * torch.tanh(config["beta"] * x)


layer("ScaledTanh", torch=scaled_tanh, output_shape=lambda config, shapes: shapes[0])
