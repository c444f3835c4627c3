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

HELPERS["KerasRNN"] = '''class KerasRNNMixin:
    """Keras recurrent-layer semantics over torch nn.RNN/nn.LSTM/nn.GRU parameters (torch gate order).

    As keras/src/backend/tensorflow/rnn.py: a masked step leaves the states unchanged and outputs the
    previous step's output (zeros before the first unmasked step), or zeros with zero_output_for_mask;
    go_backwards runs over the reversed sequence and returns the outputs in that (reversed) order.
    Fast path: torch's fused kernel when the activations are torch's and the mask (if any) keeps one
    contiguous block of steps per sequence (right or left padding); otherwise an explicit step loop.
    forward(x, mask=None, initial_state=None) -> (output, [states]); states start from zeros.
    """

    def keras_setup(self, n_states, activation, recurrent_activation, go_backwards, return_sequences,
                    zero_output_for_mask, fast, reset_after=True):
        self.n_states = n_states
        self.act = activation
        self.rec_act = recurrent_activation
        self.go_backwards = go_backwards
        self.return_sequences = return_sequences
        self.zero_output_for_mask = zero_output_for_mask
        self.fast = fast
        self.reset_after = reset_after

    def forward(self, x, mask=None, initial_state=None):
        if initial_state is None:
            states = [x.new_zeros(x.shape[0], self.hidden_size) for _ in range(self.n_states)]
        else:
            states = [s.to(x.dtype) for s in initial_state]
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        if mask is not None:
            mask = mask.to(torch.bool)
        if self.fast:
            if mask is None:
                return self._fused(x, states)
            out = self._fused_block(x, mask, states)
            if out is not None:
                return out
        return self._loop(x, mask, states)

    def _hx(self, states):
        if self.n_states == 1:
            return states[0].unsqueeze(0).contiguous()
        return tuple(s.unsqueeze(0).contiguous() for s in states)

    def _unhx(self, hn):
        return [hn.squeeze(0)] if self.n_states == 1 else [h.squeeze(0) for h in hn]

    def _fused(self, x, states):
        y, hn = self._torch_forward(x, self._hx(states))
        return (y if self.return_sequences else y[:, -1]), self._unhx(hn)

    def _fused_block(self, x, mask, states):
        """Masks with one contiguous block of valid steps per row: pack the blocks, run fused, put back."""
        T = x.shape[1]
        idx = torch.arange(T, device=x.device)
        lengths = mask.sum(1)
        start = mask.int().argmax(1)
        block = (idx >= start[:, None]) & (idx < (start + lengths)[:, None])
        if T == 0 or bool((lengths == 0).any()) or not bool((block == mask).all()):
            return None
        src = (idx[None, :] + start[:, None]) % T
        xs = x.gather(1, src[:, :, None].expand(-1, -1, x.shape[2]))
        packed = nn.utils.rnn.pack_padded_sequence(xs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        yp, hn = self._torch_forward(packed, self._hx(states))
        y, _ = nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=T)
        y = y.gather(1, ((idx[None, :] - start[:, None]) % T)[:, :, None].expand(-1, -1, y.shape[2]))
        new = self._unhx(hn)
        if not self.zero_output_for_mask:  # after the block: the last valid output (= h)
            after = idx[None, :] >= (start + lengths)[:, None]
            y = torch.where(after[:, :, None], new[0][:, None, :], y)
        return (y if self.return_sequences else y[:, -1]), new

    def _loop(self, x, mask, states):
        xw = F.linear(x, self.weight_ih_l0, self.bias_ih_l0 if self.bias else None)
        prev = x.new_zeros(x.shape[0], self.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            out, new = self._cell(xw[:, t], states)
            if mask is not None:
                m = mask[:, t, None]
                out = torch.where(m, out, torch.zeros_like(out) if self.zero_output_for_mask else prev)
                new = [torch.where(m, n, s) for n, s in zip(new, states)]
            states, prev = new, out
            outs.append(out)
        if self.return_sequences:
            y = torch.stack(outs, 1) if outs else x.new_zeros(x.shape[0], 0, self.hidden_size)
        else:
            y = outs[-1] if outs else prev
        return y, states

    def _hh(self, h):
        return F.linear(h, self.weight_hh_l0, self.bias_hh_l0 if self.bias else None)


class KerasSimpleRNN(KerasRNNMixin, nn.RNN):
    """keras.layers.SimpleRNN: h = activation(x @ kernel + bias + h @ recurrent_kernel)."""

    def __init__(self, input_size, units, bias, activation, nonlinearity="tanh", **keras):
        nn.RNN.__init__(self, input_size, units, nonlinearity=nonlinearity, bias=bias, batch_first=True)
        self.keras_setup(1, activation, None, **keras)

    def _torch_forward(self, x, hx):
        return nn.RNN.forward(self, x, hx)

    def _cell(self, xw, states):
        h = self.act(xw + self._hh(states[0]))
        return h, [h]


class KerasLSTM(KerasRNNMixin, nn.LSTM):
    """keras.layers.LSTM in torch gate order i, f, g, o; Keras's one bias is bias_ih, bias_hh is zero."""

    def __init__(self, input_size, units, bias, activation, recurrent_activation, **keras):
        nn.LSTM.__init__(self, input_size, units, bias=bias, batch_first=True)
        self.keras_setup(2, activation, recurrent_activation, **keras)

    def _torch_forward(self, x, hx):
        return nn.LSTM.forward(self, x, hx)

    def _cell(self, xw, states):
        h, c = states
        i, f, g, o = (xw + self._hh(h)).chunk(4, 1)
        c = self.rec_act(f) * c + self.rec_act(i) * self.act(g)
        h = self.rec_act(o) * self.act(c)
        return h, [h, c]


class KerasGRU(KerasRNNMixin, nn.GRU):
    """keras.layers.GRU in torch gate order r, z, n. reset_after=False applies the reset gate before the
    recurrent matmul of the candidate: n = act(x_n + (r * h) @ W_hn), which nn.GRU cannot express."""

    def __init__(self, input_size, units, bias, activation, recurrent_activation, **keras):
        nn.GRU.__init__(self, input_size, units, bias=bias, batch_first=True)
        self.keras_setup(1, activation, recurrent_activation, **keras)

    def _torch_forward(self, x, hx):
        return nn.GRU.forward(self, x, hx)

    def _cell(self, xw, states):
        h = states[0]
        u = self.hidden_size
        x_r, x_z, x_n = xw.chunk(3, 1)
        if self.reset_after:
            h_r, h_z, h_n = self._hh(h).chunk(3, 1)
            r = self.rec_act(x_r + h_r)
            z = self.rec_act(x_z + h_z)
            n = self.act(x_n + r * h_n)
        else:
            w, b = self.weight_hh_l0, (self.bias_hh_l0 if self.bias else None)
            h_rz = F.linear(h, w[:2 * u], None if b is None else b[:2 * u])
            r = self.rec_act(x_r + h_rz[:, :u])
            z = self.rec_act(x_z + h_rz[:, u:])
            n = self.act(x_n + F.linear(r * h, w[2 * u:], None if b is None else b[2 * u:]))
        h = z * h + (1 - z) * n
        return h, [h]

'''

HELPERS["KerasBidirectional"] = '''class KerasBidirectional(nn.Module):
    """keras.layers.Bidirectional: a forward and a backward (go_backwards) layer on the same input; the
    backward output sequence is flipped back before merging (merge_mode concat/sum/ave/mul/None)."""

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
        for name, shape in (("query", (q_dim, heads, key_dim)), ("key", (k_dim, heads, key_dim)),
                            ("value", (v_dim, heads, value_dim))):
            setattr(self, name + "_kernel", nn.Parameter(torch.zeros(shape)))
            setattr(self, name + "_bias", nn.Parameter(torch.zeros(shape[1:])) if bias else None)
        self.output_kernel = nn.Parameter(torch.zeros(heads, value_dim, out_dim))
        self.output_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def _proj(self, x, w, b):
        y = torch.einsum("abc,cde->abde", x, w)
        return y if b is None else y + b

    def forward(self, query, value, key=None, mask=None):
        key = value if key is None else key
        q = self._proj(query, self.query_kernel, self.query_bias) * (1.0 / self.key_dim ** 0.5)
        k = self._proj(key, self.key_kernel, self.key_bias)
        v = self._proj(value, self.value_kernel, self.value_bias)
        scores = torch.einsum("aecd,abcd->acbe", k, q)
        if mask is not None:
            scores = torch.where(mask.unsqueeze(1), scores, torch.tensor(-1e9, dtype=scores.dtype))
        scores = torch.softmax(scores, dim=-1)
        out = torch.einsum("acbe,aecd->abcd", scores, v)
        out = torch.einsum("abcd,cde->abe", out, self.output_kernel)
        if self.output_bias is not None:
            out = out + self.output_bias
        return out, scores

'''
