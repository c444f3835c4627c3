"""Recurrent layers with Keras's semantics (masks, go_backwards, dropout, non-torch activations)
over torch's own nn.RNN / nn.LSTM / nn.GRU parameters; Bidirectional, stacked cells, ConvLSTM."""

import torch
import torch.nn.functional as F
from torch import nn

from .activations import keras_activation
from .conv import same_pad


class KerasRNNMixin:
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


class KerasSimpleRNN(KerasRNNMixin, nn.RNN):
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


class KerasLSTM(KerasRNNMixin, nn.LSTM):
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


class KerasGRU(KerasRNNMixin, nn.GRU):
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


class KerasBidirectional(nn.Module):
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


class KerasStackedRNN(nn.Module):
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


class KerasConvLSTM(nn.Module):
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
