"""kconv extension for FixedStandardize (examples/extensions/keras_layers.py): non-trainable state.

    kconv convert fixtures/custom/standardize.keras -o out --extension examples/extensions/standardize.py
"""
import torch
from torch import nn

from kconv.extend import WeightDecl, layer


class FixedStandardize(nn.Module):
    """(x - mean) / sqrt(var + epsilon) * gain; mean and var are buffers (never trained)."""

    def __init__(self, config, input_shape):
        super().__init__()
        n = input_shape[-1]
        self.epsilon = config["epsilon"]
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("var", torch.ones(n))
        self.gain = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return (x - self.mean) / torch.sqrt(self.var + self.epsilon) * self.gain


layer(
    "FixedStandardize",
    torch=FixedStandardize,
    # in build() order; a .keras file stores the trainable gain first (kconv reads them as Keras does)
    weights=[
        WeightDecl("mean", role="moving_mean", trainable=False, torch="mean"),
        WeightDecl("var", role="moving_variance", trainable=False, torch="var"),
        WeightDecl("gain", role="gamma", torch="gain"),
    ],
    output_shape=lambda config, shapes: shapes[0],
)
