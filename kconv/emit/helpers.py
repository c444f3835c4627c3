"""Small torch modules/functions pasted into model.py when a layer needs them (model.py imports only torch)."""

HELPERS = {
    "KerasNormalization": '''class KerasNormalization(nn.Module):
    """keras.layers.Normalization: (x - mean) / max(sqrt(variance), 1e-7); invert: mean + x * that."""

    def __init__(self, shape, broadcast, mean=None, variance=None, invert=False):
        super().__init__()
        self.broadcast = broadcast
        self.invert = invert
        if mean is None:  # adapted statistics: stored weights, in Keras's shape
            self.register_buffer("mean", torch.zeros(shape))
            self.register_buffer("variance", torch.ones(shape))
        else:  # statistics given in the Keras config: constants
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
            self.register_buffer("variance", torch.tensor(variance, dtype=torch.float32), persistent=False)

    def forward(self, x):
        mean = self.mean.reshape(self.broadcast) if self.mean.dim() else self.mean
        std = torch.clamp(torch.sqrt(self.variance), min=1e-7)
        std = std.reshape(self.broadcast) if std.dim() else std
        if self.invert:
            return mean + x * std
        return (x - mean) / std

''',
    "VarianceScaling": '''class VarianceScaling(nn.Module):
    """Keras 3 LayerNormalization(rms_scaling=True): x * rsqrt(var(x) + eps) * weight (no centring)."""

    def __init__(self, shape, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps
        self.dims = tuple(range(-len(shape), 0))

    def forward(self, x):
        var = x.var(dim=self.dims, unbiased=False, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight

''',
    "PReLU": '''class KerasPReLU(nn.Module):
    """keras.layers.PReLU: alpha has the input's non-batch shape, 1 on shared axes."""

    def __init__(self, shape, channels_first=False):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(shape))
        # Inside a channels-first conv stack, alpha's last (channel) axis moves to the front.
        self.perm = (len(shape) - 1, *range(len(shape) - 1)) if channels_first else None

    def forward(self, x):
        alpha = self.alpha if self.perm is None else self.alpha.permute(self.perm)
        return torch.relu(x) - alpha * torch.relu(-x)

''',
    "same_pad": '''def same_pad(x, kernel, stride, dilation, value=0.0):
    """TensorFlow/Keras 'same' padding for the trailing len(kernel) dims: extra padding goes last."""
    pads = []
    for i, k, s, d in zip(reversed(x.shape[-len(kernel):]), reversed(kernel), reversed(stride), reversed(dilation)):
        total = max((-(-i // s) - 1) * s + (k - 1) * d + 1 - i, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)

''',
    "SeparableConv": '''class SeparableConv(nn.Module):
    """Depthwise convolution followed by a pointwise (1x1) convolution."""

    def __init__(self, depthwise, pointwise):
        super().__init__()
        self.depthwise = depthwise
        self.pointwise = pointwise

    def forward(self, x):
        return self.pointwise(self.depthwise(x))

''',
}
