"""kconv extension for AttentionPooling (examples/extensions/keras_layers.py): weights and a mask.

    kconv convert fixtures/custom/attn_pool.keras -o out --extension examples/extensions/attention_pooling.py
"""
import torch
from torch import nn

from kconv.extend import WeightDecl, layer


class AttentionPooling(nn.Module):
    """score_t = v . tanh(x_t W + b), softmax over the unmasked steps, weighted mean of x."""

    def __init__(self, config, input_shape):
        super().__init__()
        units = config["units"]
        self.w = nn.Parameter(torch.zeros(input_shape[-1], units))  # (features, units): Keras's layout, kept as is
        self.b = nn.Parameter(torch.zeros(units))
        self.v = nn.Parameter(torch.zeros(units))

    def forward(self, x, mask=None):
        scores = (torch.tanh(x @ self.w + self.b) * self.v).sum(-1)
        if mask is not None:
            scores = torch.where(mask, scores, torch.full_like(scores, -1e9))
        weights = torch.softmax(scores, dim=-1)
        return (x * weights.unsqueeze(-1)).sum(1)


layer(
    "AttentionPooling",
    torch=AttentionPooling,
    weights=[
        WeightDecl("w", role="kernel", torch="w"),
        WeightDecl("b", role="bias", torch="b"),
        WeightDecl("v", role="kernel", torch="v"),
    ],
    output_shape=lambda config, shapes: (shapes[0][0], shapes[0][-1]),
    mask="use",
)
