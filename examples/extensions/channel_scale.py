"""kconv extension for ChannelScale (examples/extensions/keras2_layers.py), a tf-keras 2 legacy .h5.

    kconv convert fixtures/custom/k2_scale.h5 -o out --extension examples/extensions/channel_scale.py
"""
import torch
from torch import nn

from kconv.extend import WeightDecl, layer


class ChannelScale(nn.Module):
    def __init__(self, config, input_shape):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(input_shape[-1]))

    def forward(self, x):
        return x * self.scale


layer("ChannelScale", torch=ChannelScale, weights=[WeightDecl("scale", role="gamma", torch="scale")],
      output_shape=lambda config, shapes: shapes[0])
