"""Small torch modules/functions pasted into model.py when a layer needs them (model.py imports only torch)."""

HELPERS = {
    "KerasNormalization": '''class KerasNormalization(nn.Module):
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

''',
    "VarianceScaling": '''class VarianceScaling(nn.Module):
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

''',
    "LayerScale": '''class LayerScale(nn.Module):
    """ConvNeXt LayerScale: x * gamma over the channel axis."""

    def __init__(self, channels, channels_first=False):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.channels_first = channels_first

    def forward(self, x):
        if self.channels_first:
            return x * self.gamma.reshape(-1, *([1] * (x.dim() - 2)))
        return x * self.gamma

''',
    "NoiseShapeDropout": '''class NoiseShapeDropout(nn.Module):
    """keras Dropout with noise_shape (and SpatialDropout): one keep/drop draw per mask position,
    broadcast over the axes where the mask has size 1; identity in eval mode."""

    def __init__(self, rate, noise_shape):
        super().__init__()
        self.rate = rate
        self.noise_shape = noise_shape

    def forward(self, x):
        if not self.training or self.rate <= 0:
            return x
        shape = [x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape)]
        keep = (torch.rand(shape, device=x.device) >= self.rate).to(x.dtype)
        return x * keep / (1.0 - self.rate)

''',
    "GaussianDropout": '''class GaussianDropout(nn.Module):
    """keras GaussianDropout: x * N(1, rate / (1 - rate)) in training; identity in eval mode."""

    def __init__(self, rate):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate <= 0:
            return x
        return x * (1.0 + (self.rate / (1.0 - self.rate)) ** 0.5 * torch.randn_like(x))

''',
    "GaussianNoise": '''class GaussianNoise(nn.Module):
    """keras GaussianNoise: x + N(0, stddev) in training; identity in eval mode."""

    def __init__(self, stddev):
        super().__init__()
        self.stddev = stddev

    def forward(self, x):
        if not self.training or self.stddev <= 0:
            return x
        return x + self.stddev * torch.randn_like(x)

''',
    "KerasBatchNorm": '''class _KerasBatchNorm:
    """nn.BatchNorm as keras.layers.BatchNormalization in train mode: normalise with the batch's
    (biased) statistics and update the running variance with the biased batch variance (torch uses
    the unbiased one); a frozen layer (Keras trainable=False) always uses its running statistics.
    Eval mode is plain nn.BatchNorm.

    renorm=(momentum, rmin, rmax, dmax): Keras's batch renormalization in train mode
    (keras/src/layers/normalization/batch_normalization.py): gamma and beta corrected by r =
    clip(sigma / renorm_stddev) and d = clip((mu - renorm_mean) / renorm_stddev);
    renorm_mean/renorm_stddev and moving_mean/moving_stddev follow the batch's mean and sqrt(var +
    eps); running_var = relu(moving_stddev^2 - eps).
    """

    def __init__(self, *args, frozen=False, renorm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen = frozen
        self.renorm = renorm
        if renorm is not None:
            for name in ("moving_stddev", "renorm_mean", "renorm_stddev"):
                self.register_buffer(name, torch.zeros(self.num_features))

    def _renorm_forward(self, x, mean, var):
        momentum, rmin, rmax, dmax = self.renorm
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

    def forward(self, x):
        if not self.training or self.frozen:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if self.renorm is not None:
            dims = [0] + list(range(2, x.dim()))
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)
            return self._renorm_forward(x, mean, var)
        with torch.no_grad():
            dims = [0] + list(range(2, x.dim()))
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1
        # batch statistics (biased variance), differentiable: no running tensors passed
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

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
    """TensorFlow/Keras 'same' padding of the trailing len(kernel) dims: extra padding goes last."""
    pads = []
    n = len(kernel)
    for j in reversed(range(n)):
        i, k, s, d = x.shape[x.dim() - n + j], kernel[j], stride[j], dilation[j]
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

HELPERS["KerasRNN"] = '''class KerasRNNMixin:
    """Keras recurrent-layer semantics over torch nn.RNN/nn.LSTM/nn.GRU parameters (torch gate
    order).

    As keras/src/backend/tensorflow/rnn.py: a masked step leaves the states unchanged and outputs
    the previous step's output (zeros before the first unmasked step), or zeros with
    zero_output_for_mask; go_backwards runs over the reversed sequence and returns the outputs in
    that (reversed) order. Which path runs depends on the module and the call's structure, never on
    the data: torch's fused kernel when the activations are torch's and no mask is given; otherwise
    an explicit step loop (masked steps are handled with torch.where). So jit.trace / torch.export
    capture one function that is right for every padding pattern; the loop is unrolled, so its
    sequence length is static there. forward(x, mask=None, initial_state=None) -> (output,
    [states]); states start from zeros.

    Train mode with dropout / recurrent_dropout (keras/src/layers/rnn/dropout_rnn_cell.py): one mask
    per sequence, drawn when the call starts (shape (batch, input) and (batch, units), values 0 or
    1/(1 - rate)), applied to the input and to the previous h at every step through the step loop;
    n_masks > 1 (LSTM/GRU with recurrent_dropout: Keras's implementation 1) draws one mask per gate
    (Keras gate order). The masks of the last call are kept in `last_dropout_masks` (input,
    recurrent).
    """

    def keras_setup(
        self,
        n_states,
        activation,
        recurrent_activation,
        go_backwards=False,
        return_sequences=False,
        zero_output_for_mask=False,
        fast=False,
        reset_after=True,
        dropout=0.0,
        recurrent_dropout=0.0,
        n_masks=1,
    ):
        self.n_states = n_states
        self.dropout, self.recurrent_dropout, self.n_masks = dropout, recurrent_dropout, n_masks
        self.last_dropout_masks = None
        self.act = activation
        self.rec_act = recurrent_activation
        self.go_backwards = go_backwards
        self.return_sequences = return_sequences
        self.zero_output_for_mask = zero_output_for_mask
        self.fast = fast
        self.reset_after = reset_after

    def forward(self, x, mask=None, initial_state=None):
        if initial_state is None:
            states = [x.new_zeros((x.shape[0], self.hidden_size)) for _ in range(self.n_states)]
        else:
            states = [s.to(x.dtype) for s in initial_state]
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        if mask is not None:
            mask = mask.to(torch.bool)
        drop = None
        if self.training and (self.dropout or self.recurrent_dropout):
            drop = (
                self._draw_masks(x, x.shape[2], self.dropout),
                self._draw_masks(x, self.hidden_size, self.recurrent_dropout),
            )
            self.last_dropout_masks = drop
        if self.fast and drop is None and mask is None:
            return self._fused(x, states)
        return self._loop(x, mask, states, drop)

    def _draw_masks(self, x, n, rate):
        if not rate:
            return None
        shape = (x.shape[0], n)
        if rate >= 1:
            return [x.new_zeros(shape) for _ in range(self.n_masks)]
        return [
            (torch.rand(shape, device=x.device) >= rate).to(x.dtype) / (1 - rate)
            for _ in range(self.n_masks)
        ]

    def _gated(self, v, masks, w, b):
        """F.linear(v, w, b) with v multiplied by the dropout mask(s) first: one mask, or one per
        gate (masks in Keras gate order, w and b in torch gate order: _keras_gate maps torch ->
        Keras)."""
        if masks is None:
            return F.linear(v, w, b)
        if len(masks) == 1:
            return F.linear(v * masks[0], w, b)
        g = len(self._keras_gate)
        ws, bs = w.chunk(g, 0), (b.chunk(g, 0) if b is not None else [None] * g)
        return torch.cat(
            [F.linear(v * masks[k], ws[j], bs[j]) for j, k in enumerate(self._keras_gate)], -1
        )

    def _hx(self, states):
        if self.n_states == 1:
            return states[0].unsqueeze(0).contiguous()
        return tuple(s.unsqueeze(0).contiguous() for s in states)

    def _unhx(self, hn):
        return [hn.squeeze(0)] if self.n_states == 1 else [h.squeeze(0) for h in hn]

    def _fused(self, x, states):
        y, hn = self._torch_forward(x, self._hx(states))
        return (y if self.return_sequences else y[:, -1]), self._unhx(hn)

    def _loop(self, x, mask, states, drop=None):
        dp, rec = drop or (None, None)
        dp = None if dp is None else [m[:, None] for m in dp]
        xw = self._gated(x, dp, self.weight_ih_l0, self.bias_ih_l0 if self.bias else None)
        prev = x.new_zeros((x.shape[0], self.hidden_size))
        outs = []
        for t in range(x.shape[1]):
            out, new = self._cell(xw[:, t], states, rec)
            if mask is not None:
                m = mask[:, t, None]
                out = torch.where(
                    m, out, torch.zeros_like(out) if self.zero_output_for_mask else prev
                )
                new = [torch.where(m, n, states[j]) for j, n in enumerate(new)]
            states, prev = new, out
            outs.append(out)
        if self.return_sequences:
            y = torch.stack(outs, 1) if outs else x.new_zeros((x.shape[0], 0, self.hidden_size))
        else:
            y = outs[-1] if outs else prev
        return y, states

    def _hh(self, h, rec=None):
        return self._gated(h, rec, self.weight_hh_l0, self.bias_hh_l0 if self.bias else None)
'''

HELPERS["KerasSimpleRNN"] = '''class KerasSimpleRNN(KerasRNNMixin, nn.RNN):
    """keras.layers.SimpleRNN: h = activation(x @ kernel + bias + h @ recurrent_kernel)."""

    def __init__(
        self, input_size, units, bias=True, activation="tanh", nonlinearity="tanh", **keras
    ):
        nn.RNN.__init__(
            self, input_size, units, nonlinearity=nonlinearity, bias=bias, batch_first=True
        )
        self.keras_setup(1, activation, None, **keras)

    def _torch_forward(self, x, hx):
        return nn.RNN.forward(self, x, hx)

    _keras_gate = (0,)

    def _cell(self, xw, states, rec=None):
        h = keras_activation(self.act, xw + self._hh(states[0], rec))
        return h, [h]
'''

HELPERS["KerasLSTM"] = '''class KerasLSTM(KerasRNNMixin, nn.LSTM):
    """keras.layers.LSTM in torch gate order i, f, g, o; Keras's one bias is bias_ih, bias_hh is
    zero."""

    def __init__(
        self,
        input_size,
        units,
        bias=True,
        activation="tanh",
        recurrent_activation="sigmoid",
        **keras,
    ):
        nn.LSTM.__init__(self, input_size, units, bias=bias, batch_first=True)
        self.keras_setup(2, activation, recurrent_activation, **keras)

    def _torch_forward(self, x, hx):
        return nn.LSTM.forward(self, x, hx)

    _keras_gate = (0, 1, 2, 3)

    def _cell(self, xw, states, rec=None):
        h, c = states
        i, f, g, o = (xw + self._hh(h, rec)).chunk(4, 1)
        c = keras_activation(self.rec_act, f) * c + (
            keras_activation(self.rec_act, i) * keras_activation(self.act, g)
        )
        h = keras_activation(self.rec_act, o) * keras_activation(self.act, c)
        return h, [h, c]
'''

HELPERS["KerasGRU"] = '''class KerasGRU(KerasRNNMixin, nn.GRU):
    """keras.layers.GRU in torch gate order r, z, n. reset_after=False applies the reset gate before
    the recurrent matmul of the candidate: n = act(x_n + (r * h) @ W_hn), which nn.GRU cannot
    express."""

    def __init__(
        self,
        input_size,
        units,
        bias=True,
        activation="tanh",
        recurrent_activation="sigmoid",
        **keras,
    ):
        nn.GRU.__init__(self, input_size, units, bias=bias, batch_first=True)
        self.keras_setup(1, activation, recurrent_activation, **keras)

    def _torch_forward(self, x, hx):
        return nn.GRU.forward(self, x, hx)

    _keras_gate = (1, 0, 2)  # torch r, z, n <- Keras z, r, h

    def _cell(self, xw, states, rec=None):
        h = states[0]
        u = self.hidden_size
        x_r, x_z, x_n = xw.chunk(3, 1)
        if self.reset_after:
            h_r, h_z, h_n = self._hh(h, rec).chunk(3, 1)
            r = keras_activation(self.rec_act, x_r + h_r)
            z = keras_activation(self.rec_act, x_z + h_z)
            n = keras_activation(self.act, x_n + r * h_n)
        else:
            w, b = self.weight_hh_l0, (self.bias_hh_l0 if self.bias else None)
            # recurrent dropout masks (Keras order z, r, h) on h before each gate's matmul
            hz, hr, hh = (
                (h, h, h) if rec is None else [h * rec[min(k, len(rec) - 1)] for k in range(3)]
            )
            h_rz = torch.cat(
                [
                    F.linear(hr, w[:u], None if b is None else b[:u]),
                    F.linear(hz, w[u : 2 * u], None if b is None else b[u : 2 * u]),
                ],
                1,
            )
            r = keras_activation(self.rec_act, x_r + h_rz[:, :u])
            z = keras_activation(self.rec_act, x_z + h_rz[:, u:])
            n = keras_activation(
                self.act, x_n + F.linear(r * hh, w[2 * u :], None if b is None else b[2 * u :])
            )
        h = z * h + (1 - z) * n
        return h, [h]
'''


HELPERS["KerasBidirectional"] = '''class KerasBidirectional(nn.Module):
    """keras.layers.Bidirectional: a forward and a backward (go_backwards) layer on the same input;
    the backward output sequence is flipped back before merging (merge_mode
    concat/sum/ave/mul/None)."""

    def __init__(self, forward_layer, backward_layer, merge_mode, return_sequences):
        super().__init__()
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer
        self.merge_mode = merge_mode
        self.return_sequences = return_sequences

    def forward(self, x, mask=None, initial_state=None):
        fs = bs = None
        if initial_state is not None:
            half = len(initial_state) // 2
            fs, bs = initial_state[:half], initial_state[half:]
        y, s_f = self.forward_layer(x, mask, fs)
        y_rev, s_b = self.backward_layer(x, mask, bs)
        if self.return_sequences:
            y_rev = y_rev.flip(1)
        if self.merge_mode == "concat":
            out = (torch.cat([y, y_rev], -1),)
        elif self.merge_mode == "sum":
            out = (y + y_rev,)
        elif self.merge_mode == "ave":
            out = ((y + y_rev) / 2,)
        elif self.merge_mode == "mul":
            out = (y * y_rev,)
        else:
            out = (y, y_rev)
        return out, s_f + s_b

'''

HELPERS["KerasMultiHeadAttention"] = '''class KerasMultiHeadAttention(nn.Module):
    """keras.layers.MultiHeadAttention over (batch, time, features) inputs, attention over time:
    per-head projections with Keras's kernels (d, heads, key_dim) / output (heads, value_dim, out),
    scores scaled by 1/sqrt(key_dim), masked positions set to -1e9 before the softmax."""

    def __init__(self, q_dim, k_dim, v_dim, heads, key_dim, value_dim, out_dim, bias):
        super().__init__()
        self.key_dim = key_dim
        for name, shape in (
            ("query", (q_dim, heads, key_dim)),
            ("key", (k_dim, heads, key_dim)),
            ("value", (v_dim, heads, value_dim)),
        ):
            setattr(self, name + "_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, name + "_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros(heads, value_dim, out_dim))
        self.output_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def _proj(self, x, w, b):
        y = torch.einsum("abc,cde->abde", x, w)
        return y if b is None else y + b

    def forward(
        self,
        query,
        value,
        key: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        zero_masked_rows: bool = True,
    ):
        key = value if key is None else key
        q = self._proj(query, self.query_kernel, self.query_bias) * (1.0 / self.key_dim**0.5)
        k = self._proj(key, self.key_kernel, self.key_bias)
        v = self._proj(value, self.value_kernel, self.value_bias)
        scores = torch.einsum("aecd,abcd->acbe", k, q)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), -1e9)
        scores = torch.softmax(scores, dim=-1)
        if mask is not None and zero_masked_rows:  # keras Softmax zeroes masked positions
            scores = scores.masked_fill(~mask.unsqueeze(1), 0.0)
        out = torch.einsum("acbe,aecd->abcd", scores, v)
        out = torch.einsum("abcd,cde->abe", out, self.output_kernel)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out, scores

'''
HELPERS["KerasQuantizedDense"] = '''class KerasQuantizedDense(nn.Module):
    """Keras 3 quantized Dense (keras/src/layers/core/dense.py), pre-activation, kernel in Keras
    layout.

    int8 / int4 per-channel: y = (q(x) @ kernel) / (kernel_scale * x_scale), the integer product
    exact,
      where q is Keras's AbsMaxQuantizer on each row of x: x_scale = high / (max|x| + eps),
      q(x) = clip(round_half_even(x * x_scale), low, high); without an inputs quantizer
      y = (x @ kernel) / kernel_scale. The int4 kernel is unpacked to int8 values in [-8, 7].
    int4 sub-channel (groups of input rows): y = x @ ((kernel - zero[g_idx]) * scale[g_idx]).
    float8: y = qdq(x, inputs_scale) @ qdq(kernel, kernel_scale), qdq(t, s) = float8_e4m3fn(clip(t /
    s,
      +-448)) * s; the float32 bias is rounded to bfloat16 first, as Keras does.
    compute_dtype (a mixed_bfloat16 policy: 'bfloat16'): inputs, float variables (kernel_scale,
    bias, the float8 kernel) and every step in that dtype, as Keras autocasts them; the float8
    scales stay float32 variables but are cast where used (quantize_and_dequantize).
    """

    def __init__(
        self,
        in_features,
        units,
        mode,
        bias=True,
        inputs_quantizer=None,
        groups=None,
        compute_dtype="float32",
    ):
        super().__init__()
        self.mode = mode
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.inputs_quantizer = inputs_quantizer
        self.sub_channel = groups is not None
        if mode == "float8":
            self.kernel = nn.Parameter(torch.zeros(in_features, units))
            self.register_buffer("inputs_scale", torch.ones(()))
            self.register_buffer("kernel_scale", torch.ones(()))
        else:
            self.register_buffer("kernel", torch.zeros(in_features, units, dtype=torch.int8))
            self.register_buffer(
                "kernel_scale", torch.ones(units if groups is None else (groups, units))
            )
            if groups is not None:
                self.register_buffer("kernel_zero", torch.zeros(groups, units, dtype=torch.int8))
                self.register_buffer("g_idx", torch.zeros(in_features))
        self.bias = nn.Parameter(torch.zeros(units)) if bias else None

    @staticmethod
    def _qdq(t, scale):
        scale = scale.to(t.dtype)
        q = torch.clamp(t / scale, -448.0, 448.0).to(torch.float8_e4m3fn)
        return q.to(t.dtype) * scale

    def forward(self, x):
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        if self.mode == "float8":
            y = torch.matmul(
                self._qdq(x, self.inputs_scale),
                self._qdq(self.kernel.to(x.dtype), self.kernel_scale),
            )
            if self.bias is not None:
                y = y + self.bias.to(torch.bfloat16).to(y.dtype)
            return y
        kernel_scale = self.kernel_scale.to(x.dtype)
        if self.sub_channel:
            g = self.g_idx.long()
            w = (self.kernel.to(x.dtype) - self.kernel_zero[g].to(x.dtype)) * kernel_scale[g]
            y = torch.matmul(x, w)
        elif self.inputs_quantizer is not None:
            low, high, eps = self.inputs_quantizer
            x_scale = high / (x.abs().amax(dim=-1, keepdim=True) + eps)
            xq = torch.clamp(torch.round(x * x_scale), low, high)
            # exact integer products and sums (Keras: int8 x int8 -> int32 matmul)
            y = torch.matmul(xq.double(), self.kernel.double()).to(x.dtype)
            y = y / (kernel_scale * x_scale)
        else:
            y = torch.matmul(x, self.kernel.to(x.dtype)) / kernel_scale
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y

'''
HELPERS["KerasQuantizedEmbedding"] = '''class KerasQuantizedEmbedding(nn.Module):
    """Keras 3 int8/int4 quantized Embedding (keras/src/layers/core/embedding.py _int8_call,
    _int4_call): the stored integer row of each id (int4 unpacked to int8 values in [-8, 7]),
    divided by the id's embeddings_scale; int4 sub-channel: (row - zero[id, g_idx]) * scale[id,
    g_idx]. All in compute_dtype ('bfloat16' under a mixed_bfloat16 policy: the scales autocast as
    in Keras)."""

    def __init__(self, input_dim, output_dim, groups=None, compute_dtype="float32"):
        super().__init__()
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.sub_channel = groups is not None
        self.register_buffer("embeddings", torch.zeros(input_dim, output_dim, dtype=torch.int8))
        self.register_buffer(
            "embeddings_scale", torch.ones(input_dim if groups is None else (input_dim, groups))
        )
        if groups is not None:
            self.register_buffer(
                "embeddings_zero", torch.zeros(input_dim, groups, dtype=torch.int8)
            )
            self.register_buffer("g_idx", torch.zeros(output_dim))

    def forward(self, ids):
        ids = ids.long()
        dtype = self.compute_dtype or self.embeddings_scale.dtype
        rows = self.embeddings[ids].to(dtype)
        scale = self.embeddings_scale.to(dtype)
        if self.sub_channel:
            g = self.g_idx.long()
            zero = self.embeddings_zero[ids][..., g].to(rows.dtype)
            return (rows - zero) * scale[ids][..., g]
        return rows / scale[ids].unsqueeze(-1)

'''
HELPERS["KerasReversibleEmbedding"] = '''class KerasReversibleEmbedding(nn.Module):
    """keras.layers.ReversibleEmbedding (keras/src/layers/core/reversible_embedding.py).

    forward(ids): the embeddings row of each id (quantized: as KerasQuantizedEmbedding); forward(x,
    reverse=True): logits = x @ embeddings^T (tie_weights) or x @ reverse_embeddings, optionally
    tanh(logits / cap) * cap. Quantized (int8/int4, _int8_call/_int4_call): x quantized per row by
    AbsMaxQuantizer (x_scale = high / (max|x| + eps), round, clip) unless inputs_quantizer is None;
    per-id scales: logits = (xq @ kernel) / (x_scale * scale), the integer product exact; int4
    groups: logits = (xq @ ((kernel - zero[g_idx]) * scale[g_idx])) / x_scale.
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        tie_weights=True,
        logit_soft_cap=None,
        mode=None,
        groups=None,
        inputs_quantizer=None,
    ):
        super().__init__()
        self.tie_weights, self.logit_soft_cap, self.mode = tie_weights, logit_soft_cap, mode
        self.groups, self.inputs_quantizer = groups, inputs_quantizer
        n, d = input_dim, output_dim
        if mode is None:
            self.embeddings = nn.Parameter(torch.zeros(n, d))
            if not tie_weights:
                self.reverse_embeddings = nn.Parameter(torch.zeros(d, n))
            return
        self.register_buffer("embeddings", torch.zeros(n, d, dtype=torch.int8))
        self.register_buffer("embeddings_scale", torch.ones(n if groups is None else (n, groups)))
        if groups is not None:
            self.register_buffer("embeddings_zero", torch.zeros(n, groups, dtype=torch.int8))
            self.register_buffer("g_idx", torch.zeros(d))
        if not tie_weights:
            self.register_buffer("reverse_embeddings", torch.zeros(d, n, dtype=torch.int8))
            self.register_buffer(
                "reverse_embeddings_scale", torch.ones(n if groups is None else (groups, n))
            )
            if groups is not None:
                self.register_buffer("reverse_embeddings_zero", torch.zeros(groups, n))

    def _lookup(self, ids):
        ids = ids.long()
        if self.mode is None:
            return F.embedding(ids, self.embeddings)
        rows = self.embeddings[ids].to(self.embeddings_scale.dtype)
        if self.groups is not None:
            g = self.g_idx.long()
            return (
                rows - self.embeddings_zero[ids][..., g].to(rows.dtype)
            ) * self.embeddings_scale[ids][..., g]
        return rows / self.embeddings_scale[ids].unsqueeze(-1)

    def _reverse(self, x):
        if self.mode is None:
            return torch.matmul(
                x, self.embeddings.t() if self.tie_weights else self.reverse_embeddings
            )
        if self.tie_weights:
            kernel, scale = self.embeddings.t(), self.embeddings_scale
            zero = self.embeddings_zero if self.groups is not None else None
            if self.groups is not None:
                scale, zero = scale.t(), zero.t()  # (groups, input_dim)
        else:
            kernel, scale = self.reverse_embeddings, self.reverse_embeddings_scale
            zero = self.reverse_embeddings_zero if self.groups is not None else None
        x_scale = torch.ones((1,), dtype=x.dtype, device=x.device)
        if self.inputs_quantizer is not None:
            low, high, eps = self.inputs_quantizer
            x_scale = high / (x.abs().amax(dim=-1, keepdim=True) + eps)
            x = torch.clamp(torch.round(x * x_scale), low, high)
        if self.groups is not None:
            g = self.g_idx.long()
            w = (kernel.to(x.dtype) - zero[g].to(x.dtype)) * scale[g].to(x.dtype)
            return torch.matmul(x, w) / x_scale
        # exact integer products and sums (Keras: int8 x int8 matmul)
        y = torch.matmul(x.double(), kernel.double()).to(scale.dtype)
        return y / (x_scale * scale)

    def forward(self, x, reverse=False):
        if not reverse:
            return self._lookup(x)
        y = self._reverse(x)
        if self.logit_soft_cap is not None:
            y = torch.tanh(y / self.logit_soft_cap) * self.logit_soft_cap
        return y

'''
HELPERS["KerasQuantizedEinsumDense"] = '''class KerasQuantizedEinsumDense(nn.Module):
    """Keras 3 quantized EinsumDense (keras/src/layers/core/einsum_dense.py), pre-activation.

    int8: with an inputs quantizer, xq = AbsMax(x) over the input's reduced axes (x_scale = high /
      (max|x| + eps), round half to even, clip); y = einsum(xq, kernel) (exact integer sums) /
      (x_scale laid out as the output (transpose, expand, squeeze as Keras) * kernel_scale);
      without, y = einsum(x, kernel) / kernel_scale.
    int4: kernel stored as (rows, ceil(columns/2)) signed nibbles (low first); unpacked to (rows,
      columns), dequantized (/ scale per column, or (k - zero[g_idx]) * scale[g_idx] per row group)
      and reshaped to the kernel shape; y = einsum(xq, w) / x_scale with an inputs quantizer (per
      column), else einsum(x, w).
    float8: y = einsum(qdq(x, inputs_scale), qdq(kernel, kernel_scale)); bias rounded to bfloat16.
    compute_dtype ('bfloat16' under mixed_bfloat16): inputs and float variables cast to it, as Keras
    autocasts them, and every step computed in it.
    """

    def __init__(
        self,
        equation,
        mode,
        kernel_shape,
        stored,
        bias_shape=None,
        scale_shape=None,
        groups=None,
        inputs_quantizer=None,
        input_axes=None,
        kernel_reduced_axes=None,
        compute_dtype="float32",
    ):
        super().__init__()
        # float32: follow the module's own float dtype (net.double() works); else Keras's compute
        # dtype
        self.compute_dtype = None if compute_dtype == "float32" else getattr(torch, compute_dtype)
        self.equation, self.mode, self.kernel_shape = equation, mode, tuple(kernel_shape)
        self.groups, self.inputs_quantizer, self.input_axes = groups, inputs_quantizer, input_axes
        if mode == "float8":
            self.kernel = nn.Parameter(torch.zeros(stored))
            self.register_buffer("inputs_scale", torch.ones(()))
            self.register_buffer("kernel_scale", torch.ones(()))
        else:
            self.register_buffer("kernel", torch.zeros(stored, dtype=torch.int8))
            self.register_buffer("kernel_scale", torch.ones(scale_shape))
            if groups is not None:
                self.register_buffer("kernel_zero", torch.zeros(scale_shape, dtype=torch.int8))
                self.register_buffer("g_idx", torch.zeros(stored[0]))
            red = set(kernel_reduced_axes)
            self.columns = 1
            for i, n in enumerate(self.kernel_shape):
                self.columns *= 1 if i in red else n
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    @staticmethod
    def _qdq(t, scale):
        scale = scale.to(t.dtype)
        q = torch.clamp(t / scale, -448.0, 448.0).to(torch.float8_e4m3fn)
        return q.to(t.dtype) * scale

    def _quantize_inputs(self, x):
        low, high, eps = self.inputs_quantizer
        reduced, transpose, expand, squeeze = self.input_axes
        x_scale = high / (x.abs().amax(dim=reduced, keepdim=True) + eps)
        xq = torch.clamp(torch.round(x * x_scale), low, high)
        if transpose:
            x_scale = x_scale.permute(*transpose)
        for a in sorted(expand):
            x_scale = x_scale.unsqueeze(a)
        if squeeze:
            x_scale = x_scale.squeeze(tuple(squeeze))
        return xq, x_scale

    def _unpacked(self):
        u = self.kernel.to(torch.int16) & 0xFF
        lo, hi = ((u & 0x0F) ^ 8) - 8, (((u >> 4) & 0x0F) ^ 8) - 8
        return torch.stack([lo, hi], dim=-1).reshape(u.shape[0], -1)[:, : self.columns]

    def forward(self, x):
        if self.compute_dtype is not None:
            x = x.to(self.compute_dtype)
        if self.mode == "float8":
            y = torch.einsum(
                self.equation,
                self._qdq(x, self.inputs_scale),
                self._qdq(self.kernel.to(x.dtype), self.kernel_scale),
            )
            return y if self.bias is None else y + self.bias.to(torch.bfloat16).to(y.dtype)
        kernel_scale = self.kernel_scale.to(x.dtype)
        if self.mode == "int8":
            if self.inputs_quantizer is not None:
                xq, x_scale = self._quantize_inputs(x)
                y = torch.einsum(self.equation, xq.double(), self.kernel.double()).to(x.dtype)
                y = y / (x_scale * kernel_scale)
            else:
                y = torch.einsum(self.equation, x, self.kernel.to(x.dtype)) / kernel_scale
        else:
            k = self._unpacked().to(x.dtype)
            if self.groups is not None:
                g = self.g_idx.long()
                w = (k - self.kernel_zero[g].to(x.dtype)) * kernel_scale[g]
                y = torch.einsum(self.equation, x, w.reshape(self.kernel_shape))
            else:
                w = (k / kernel_scale).reshape(self.kernel_shape)
                if self.inputs_quantizer is not None:
                    xq, x_scale = self._quantize_inputs(x)
                    y = torch.einsum(self.equation, xq, w) / x_scale
                else:
                    y = torch.einsum(self.equation, x, w)
        return y if self.bias is None else y + self.bias.to(x.dtype)

'''
HELPERS["KerasEinsumDense"] = '''class KerasEinsumDense(nn.Module):
    """keras.layers.EinsumDense: einsum(equation, x, kernel) + bias, kernel and bias in Keras's
    layout."""

    def __init__(self, equation, kernel_shape, bias_shape=None):
        super().__init__()
        self.equation = equation
        self.kernel = nn.Parameter(torch.zeros(kernel_shape))
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x):
        y = torch.einsum(self.equation, x, self.kernel)
        return y if self.bias is None else y + self.bias

'''
HELPERS["KerasStackedRNN"] = '''class KerasStackedRNN(nn.Module):
    """keras.layers.RNN over a list of cells (StackedRNNCells): each cell's module runs over the
    whole sequence in turn (same mask); go_backwards reverses the input (and mask) once, for the
    whole stack."""

    def __init__(self, cells, go_backwards=False):
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.go_backwards = go_backwards

    def forward(self, x, mask=None, initial_state=None):
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        states = []
        for cell in self.cells:
            x, s = cell(x, mask)
            states += s
        return x, states

'''
HELPERS["KerasConvLSTM"] = '''class KerasConvLSTM(nn.Module):
    """keras.layers.ConvLSTM1D/2D/3D (keras/src/layers/rnn/conv_lstm.py), channels_last in and out.

    Per step (gates i, f, c, o on the kernels' last axis): x_* = conv(x_t, kernel_*) + bias_* (the
    layer's strides, dilation and valid/'same' padding), h_* = conv(h, recurrent_kernel_*) ('same',
    stride 1); i, f, o = rec_act(x + h); c = f * c + i * act(x_c + h_c); h = o * act(c).
    Masks, go_backwards and return_sequences follow Keras's RNN loop (as KerasRNNMixin).
    """

    def __init__(
        self,
        rank,
        in_channels,
        filters,
        kernel_size,
        strides,
        dilation,
        same,
        bias,
        activation,
        recurrent_activation,
        go_backwards,
        return_sequences,
        zero_output_for_mask,
    ):
        super().__init__()
        self.rank, self.filters = rank, filters
        self.kernel_size, self.strides, self.dilation, self.same = (
            kernel_size,
            strides,
            dilation,
            same,
        )
        self.kernel = nn.Parameter(torch.zeros(*kernel_size, in_channels, 4 * filters))
        self.recurrent_kernel = nn.Parameter(torch.zeros(*kernel_size, filters, 4 * filters))
        self.bias = nn.Parameter(torch.zeros(4 * filters)) if bias else None
        self.act, self.rec_act = activation, recurrent_activation
        self.go_backwards, self.return_sequences = go_backwards, return_sequences
        self.zero_output_for_mask = zero_output_for_mask
        self.conv = (F.conv1d, F.conv2d, F.conv3d)[rank - 1]

    def _w(self, w):  # Keras (k..., in, out) -> torch (out, in, k...)
        return w.permute(self.rank + 1, self.rank, *range(self.rank))

    def forward(self, x, mask=None, initial_state=None):
        r = self.rank
        x = x.permute(0, 1, r + 2, *range(2, r + 2))  # (B, T, C, spatial...)
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        w, rw = self._w(self.kernel), self._w(self.recurrent_kernel)
        ones = (1,) * r
        outs, states, prev = [], None, None
        for t in range(x.shape[1]):
            xt = x[:, t]
            if self.same:
                xt = same_pad(xt, self.kernel_size, self.strides, self.dilation)
            xw = self.conv(xt, w, self.bias, stride=self.strides, dilation=self.dilation)
            if states is None:
                zeros = xw.new_zeros(xw.shape[0], self.filters, *xw.shape[2:])
                states, prev = [zeros, zeros], zeros
            h, c = states
            hw = self.conv(same_pad(h, self.kernel_size, ones, ones), rw)
            xi, xf, xc, xo = xw.chunk(4, 1)
            hi, hf, hc, ho = hw.chunk(4, 1)
            i, f, o = (
                keras_activation(self.rec_act, xi + hi),
                keras_activation(self.rec_act, xf + hf),
                keras_activation(self.rec_act, xo + ho),
            )
            c_new = f * c + i * keras_activation(self.act, xc + hc)
            h_new = o * keras_activation(self.act, c_new)
            out, new = h_new, [h_new, c_new]
            if mask is not None:
                m = mask[:, t].to(torch.bool).reshape(-1, *([1] * (r + 1)))
                out = torch.where(
                    m, out, torch.zeros_like(out) if self.zero_output_for_mask else prev
                )
                new = [torch.where(m, n, states[j]) for j, n in enumerate(new)]
            states, prev = new, out
            outs.append(out)
        back = (0, *range(2, r + 2), 1)
        if self.return_sequences:
            y = torch.stack(outs, 1).permute(0, 1, *range(3, r + 3), 2)
        else:
            y = outs[-1].permute(back)
        return y, [s.permute(back) for s in states]

'''
HELPERS["KerasMultiHeadAttentionEinsum"] = '''class KerasMultiHeadAttentionEinsum(nn.Module):
    """keras.layers.MultiHeadAttention in its general form (inputs of any rank, attention_axes, a
    multi-dimensional output_shape), with Keras's own einsum equations (multi_head_attention.py
    _build_proj_equation / _build_attention_equation): query scaled by 1/sqrt(key_dim), the softmax
    normalises over the attention axes of the scores (norm_dims); masked scores are set to -1e9
    before it and masked weights to 0 after it, as keras.layers.Softmax does. ``mask`` arrives
    already broadcastable to the scores."""

    def __init__(
        self,
        q_dim,
        k_dim,
        v_dim,
        heads,
        key_dim,
        value_dim,
        out_shape,
        bias,
        proj_eq,
        dot_eq,
        combine_eq,
        out_eq,
        norm_dims,
    ):
        super().__init__()
        self.key_dim = key_dim
        self.proj_eq, self.dot_eq, self.combine_eq, self.out_eq = (
            proj_eq,
            dot_eq,
            combine_eq,
            out_eq,
        )
        self.norm_dims = tuple(norm_dims)
        for name, shape in (
            ("query", (q_dim, heads, key_dim)),
            ("key", (k_dim, heads, key_dim)),
            ("value", (v_dim, heads, value_dim)),
        ):
            setattr(self, name + "_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, name + "_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros((heads, value_dim) + tuple(out_shape)))
        self.output_bias = nn.Parameter(torch.zeros(tuple(out_shape))) if bias else None

    def _proj(self, x, w, b):
        y = torch.einsum(self.proj_eq, x, w)
        return y if b is None else y + b

    def forward(self, query, value, key=None, mask=None):
        key = value if key is None else key
        q = self._proj(query, self.query_kernel, self.query_bias) * (1.0 / self.key_dim**0.5)
        k = self._proj(key, self.key_kernel, self.key_bias)
        v = self._proj(value, self.value_kernel, self.value_bias)
        scores = torch.einsum(self.dot_eq, k, q)
        if mask is not None:
            scores = scores.masked_fill(~mask, -1e9)
        if len(self.norm_dims) == 1:
            scores = torch.softmax(scores, dim=self.norm_dims[0])
        else:
            scores = torch.exp(scores - torch.logsumexp(scores, dim=self.norm_dims, keepdim=True))
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        out = torch.einsum(self.combine_eq, scores, v)
        out = torch.einsum(self.out_eq, out, self.output_kernel)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out, scores

'''

for _n in (1, 2, 3):
    HELPERS[f"KerasBatchNorm{_n}d"] = (
        f"class KerasBatchNorm{_n}d(_KerasBatchNorm, nn.BatchNorm{_n}d):\n    pass\n"
    )

#: helpers whose source uses another helper: that one is emitted first
HELPER_DEPS = {
    "KerasBatchNorm1d": ("KerasBatchNorm",),
    "KerasBatchNorm2d": ("KerasBatchNorm",),
    "KerasBatchNorm3d": ("KerasBatchNorm",),
    "KerasSimpleRNN": ("KerasRNN",),
    "KerasLSTM": ("KerasRNN",),
    "KerasGRU": ("KerasRNN",),
}
