"""Normalization layers: BatchNormalization with Keras's train mode (and batch renormalization),
Normalization, LayerNormalization(rms_scaling=True)."""

import torch
import torch.nn.functional as F
from torch import nn


class KerasNormalization(nn.Module):
    """keras.layers.Normalization: (x - mean) / max(sqrt(variance), 1e-7); invert: mean + x *
    that."""

    def __init__(self, shape, broadcast, mean=None, variance=None, invert=False):
        super().__init__()
        self.broadcast = broadcast
        self.invert = invert
        if mean is None:  # adapted statistics: stored weights, in Keras's shape
            self.register_buffer("mean", torch.zeros(shape))
            self.register_buffer("variance", torch.ones(shape))
        else:  # statistics given in the Keras config: constants
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
            self.register_buffer(
                "variance", torch.tensor(variance, dtype=torch.float32), persistent=False
            )

    def forward(self, x):
        mean = self.mean.reshape(self.broadcast) if self.mean.dim() else self.mean
        std = torch.clamp(torch.sqrt(self.variance), min=1e-7)
        std = std.reshape(self.broadcast) if std.dim() else std
        if self.invert:
            return mean + x * std
        return (x - mean) / std


class VarianceScaling(nn.Module):
    """Keras 3 LayerNormalization(rms_scaling=True): x * rsqrt(var(x) + eps) * weight (no
    centring)."""

    def __init__(self, shape, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps
        self.dims = tuple(range(-len(shape), 0))

    def forward(self, x):
        var = x.var(dim=self.dims, unbiased=False, keepdim=True)
        return x * torch.rsqrt(var + self.eps) * self.weight


class _KerasBatchNorm:
    """Keras's BatchNormalization train mode over torch's nn.BatchNorm: the running variance
    follows the biased batch variance (torch's: the unbiased one); a frozen layer (Keras
    trainable=False) always uses its running statistics. Eval mode is torch's.

    ``inplace``: with the running statistics and autograd off (inference), for a float32 or
    float64 tensor on CPU, overwrite the input with the result (as torch's ``inplace=True``
    activations do): one memory pass and no new tensor. kconv sets it where the input is a tensor
    nothing else reads."""

    def __init__(self, *args, frozen=False, inplace=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = frozen
        self.inplace = inplace

    def inference_fast(self, x):
        """Whether this call may take inference's shortcuts (``inplace``, :func:`conv_bn`'s
        folding): the running statistics, autograd off, not recorded by torch.jit.trace (its check
        re-runs the model in another grad mode), and a float32/64 tensor on CPU (torch's kernel
        computes half and bfloat16 in float32, rounding once)."""
        return (
            (not self.training or self.frozen)
            and not torch.is_grad_enabled()
            and not torch.jit.is_tracing()
            and x.is_cpu
            and x.element_size() >= 4
        )

    def scale_shift(self):
        """torch's eval formula as x * scale + shift: scale = weight / sqrt(var + eps), shift =
        bias - mean * scale (computed from the current tensors at every call: nothing cached)."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x):
        if not self.training or self.frozen:
            if self.inplace and self.inference_fast(x):
                # tensor ops: torch.native_batch_norm(..., out=x) fails under vmap and forward AD
                scale, shift = self.scale_shift()
                shape = (-1,) + (1,) * (x.dim() - 2)
                return x.mul_(scale.view(shape)).add_(shift.view(shape))
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, eps=self.eps
            )
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=[0] + list(range(2, x.dim())), unbiased=False)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1
        # the batch's statistics (biased variance), differentiable
        return F.batch_norm(x, None, None, self.weight, self.bias, True, eps=self.eps)


def conv_bn(conv, bn, x):
    """``bn(conv(x))``, a BatchNorm reading nothing but the convolution's output. At inference
    (``KerasBatchNormNd.inference_fast``) it runs as one convolution with the BatchNorm folded
    into the kernel and bias, ``conv(x; weight * scale, bias * scale + shift)``: one pass over the
    output instead of three. Both are computed from the modules' current tensors at every call, so
    the state dict, train mode and later edits of the weights are untouched. Modules of other types
    and modules with hooks are called as they are. (torch.jit.script cannot compile a call that
    passes modules: script the --optimize output, or use torch.export.)"""
    if (
        type(conv) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        and isinstance(bn, _KerasBatchNorm)
        and conv.weight.shape[0] == bn.num_features
        and bn.inference_fast(x)
        and not torch.is_autocast_enabled(x.device.type)  # (a float32 x, a bfloat16 conv output)
        and not (conv._forward_hooks or conv._forward_pre_hooks)
        and not (bn._forward_hooks or bn._forward_pre_hooks)
    ):
        scale, shift = bn.scale_shift()
        weight = conv.weight * scale.view((-1,) + (1,) * (conv.weight.dim() - 1))
        bias = shift if conv.bias is None else torch.addcmul(shift, conv.bias, scale)
        return conv._conv_forward(x, weight, bias)
    return bn(conv(x))


class KerasBatchNorm1d(_KerasBatchNorm, nn.BatchNorm1d):
    pass


class KerasBatchNorm2d(_KerasBatchNorm, nn.BatchNorm2d):
    pass


class KerasBatchNorm3d(_KerasBatchNorm, nn.BatchNorm3d):
    pass


class _KerasBatchRenorm(_KerasBatchNorm):
    """Keras's batch renormalization (BatchNormalization(renorm=True),
    keras/src/layers/normalization/batch_normalization.py) in train mode: gamma and beta corrected
    by r = clip(sigma / renorm_stddev) and d = clip((mu - renorm_mean) / renorm_stddev);
    renorm_mean/renorm_stddev and moving_mean/moving_stddev follow the batch's mean and sqrt(var +
    eps); running_var = relu(moving_stddev^2 - eps). renorm = (momentum, rmin, rmax, dmax), None
    where Keras does not clip."""

    def __init__(self, *args, renorm, **kwargs):
        super().__init__(*args, **kwargs)
        self.renorm = renorm
        for name in ("moving_stddev", "renorm_mean", "renorm_stddev"):
            self.register_buffer(name, torch.zeros(self.num_features))

    def forward(self, x):
        if not self.training or self.frozen:
            return super().forward(x)
        momentum, rmin, rmax, dmax = self.renorm
        var, mean = torch.var_mean(x, dim=[0] + list(range(2, x.dim())), unbiased=False)
        std = torch.sqrt(var + self.eps)
        renorm_std = torch.clamp(self.renorm_stddev, min=self.eps**0.5)
        r = std / renorm_std
        d = (mean - self.renorm_mean) / renorm_std
        if rmin is not None:
            r = torch.clamp(r, min=rmin)
        if rmax is not None:
            r = torch.clamp(r, max=rmax)
        if dmax is not None:
            d = torch.clamp(d, -dmax, dmax)
        r, d = r.detach(), d.detach()
        weight = r if self.weight is None else r * self.weight
        bias = d if self.weight is None else d * self.weight
        bias = bias if self.bias is None else bias + self.bias
        with torch.no_grad():
            self.renorm_mean.lerp_(mean, momentum)
            self.renorm_stddev.lerp_(std, momentum)
            self.running_mean.lerp_(mean, self.momentum)
            self.moving_stddev.lerp_(std, self.momentum)
            self.running_var.copy_(torch.relu(self.moving_stddev * self.moving_stddev - self.eps))
            self.num_batches_tracked += 1
        # written out (not F.batch_norm with the batch statistics as running ones): differentiable
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        return y * weight.reshape(shape) + bias.reshape(shape)


class KerasBatchRenorm1d(_KerasBatchRenorm, nn.BatchNorm1d):
    pass


class KerasBatchRenorm2d(_KerasBatchRenorm, nn.BatchNorm2d):
    pass


class KerasBatchRenorm3d(_KerasBatchRenorm, nn.BatchNorm3d):
    pass
