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

    The loop is written for few torch calls per step (at batch 1 each costs more than its
    arithmetic): the input projection of all steps is one matmul before the loop, with bias_hh
    added to it where it only adds to the gates; a step is one addmm (baddbmm for a Bidirectional's
    two layers run together) and the gate arithmetic; the output is read off the states after the
    loop (_outputs).

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
        return self._finish(*self._begin(x, mask, initial_state), initial_state is None)

    def _finish(self, x, dp, mask, states, rec, fused, zero_start):
        """The rest of a call after _begin: torch's fused kernel or the step loop."""
        if fused:
            return self._fused(x, states)
        xw = self._gated(x, dp, self.weight_ih_l0, self._input_bias())
        ys, states = self._steps(self._step_inputs(xw), mask, states, self._recurrent(), rec)
        return self._outputs(ys, x, mask, zero_start), states

    def _begin(self, x, mask, initial_state):
        """A call's set-up: (x, dp, mask, states, rec, fused), x and mask in step order
        (go_backwards reverses them), dp and rec the input and recurrent dropout masks (or None),
        fused whether torch's fused kernel runs the call."""
        if initial_state is None:
            states = [x.new_zeros((x.shape[0], self.hidden_size)) for _ in range(self.n_states)]
        else:
            states = [s.to(x.dtype) for s in initial_state]
        if self.go_backwards:
            x = x.flip(1)
            mask = None if mask is None else mask.flip(1)
        if mask is not None:
            mask = mask.to(torch.bool)
        dp = rec = None
        if self.training and (self.dropout or self.recurrent_dropout):
            dp = self._draw_masks(x, x.shape[2], self.dropout)
            rec = self._draw_masks(x, self.hidden_size, self.recurrent_dropout)
            self.last_dropout_masks = (dp, rec)
        dp = None if dp is None else [m[:, None] for m in dp]
        fused = self.fast and mask is None and dp is None and rec is None
        return x, dp, mask, states, rec, fused

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

    def _input_bias(self):
        """The bias added to the input projection: bias_ih, and bias_hh where it adds to the gates
        unchanged (zero in a conversion of a Keras layer: it has one bias)."""
        return self.bias_ih_l0 + self.bias_hh_l0 if self.bias else None

    def _recurrent(self):
        """The recurrent weights as the step's matmuls take them (a call's constants): weight_hh
        transposed, and the recurrent bias the step adds (None: it is in _input_bias)."""
        return self.weight_hh_l0.t(), None

    def _step_inputs(self, xw):
        """xw (..., batch, time, gates) -> one input per step."""
        return xw.unbind(-2)

    def _steps(self, xs, mask, states, weights, rec=None):
        """The step loop: a masked step keeps the states (torch.where). States and step inputs are
        (batch, n) or, for a Bidirectional's two layers run together, (2, batch, n) (batched
        matmuls). Returns (the h after every step, final states)."""
        step = self._step(weights, torch.addmm if weights[0].dim() == 2 else torch.baddbmm, rec)
        ys = []
        if mask is None:
            for xt in xs:
                states = step(xt, states)
                ys.append(states[0])
            return ys, states
        for xt, m in zip(xs, mask.unsqueeze(-1).unbind(-2), strict=True):
            states = [torch.where(m, n, s) for n, s in zip(step(xt, states), states, strict=True)]
            ys.append(states[0])
        return ys, states

    def _outputs(self, ys, x, mask, zero_start):
        """Keras's output from the h after every step. A masked step outputs the previous step's
        output: that is the kept h, except before the first unmasked step (zeros, where the initial
        state is not zero); or zeros with zero_output_for_mask. ys: list of (batch, units)."""
        if not ys:
            n = (x.shape[0], 0) if self.return_sequences else (x.shape[0],)
            return x.new_zeros((*n, self.hidden_size))
        y = torch.stack(ys, 1) if self.return_sequences else ys[-1]
        return self._mask_output(y, mask, zero_start)

    def _mask_output(self, y, mask, zero_start):
        if mask is None or (zero_start and not self.zero_output_for_mask):
            return y
        if self.return_sequences:
            keep = mask if self.zero_output_for_mask else mask.cumsum(1) > 0
        else:
            keep = mask[:, -1] if self.zero_output_for_mask else mask.any(1)
        return torch.where(keep.unsqueeze(-1), y, 0)

    @staticmethod
    def _activation(name):
        """keras_activation(name, .) as one function, looked up once per call (torch's own where it
        is the same function)."""
        fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}.get(name)
        return fn or (lambda v: keras_activation(name, v))

    def _rec_matmul(self, weights, mm, rec):
        """(xt, h) -> xt + h @ weight_hh.T: one addmm; with recurrent dropout masks, h is multiplied
        by them first (one per gate: _gated)."""
        wt, w = weights[0], self.weight_hh_l0

        def rec_matmul(xt, h):
            return mm(xt, h, wt) if rec is None else xt + self._gated(h, rec, w, None)

        return rec_matmul


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

    def _step(self, weights, mm, rec=None):
        """The step function (xt, states) -> states of one call (its constants bound)."""
        act, rec_matmul = self._activation(self.act), self._rec_matmul(weights, mm, rec)

        def step(xt, states):
            return [act(rec_matmul(xt, states[0]))]

        return step


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

    def _step(self, weights, mm, rec=None):
        """The step function (xt, states) -> states of one call (its constants bound)."""
        rec_act, act = self._activation(self.rec_act), self._activation(self.act)
        rec_matmul, u = self._rec_matmul(weights, mm, rec), self.hidden_size
        whole = self.rec_act in ("sigmoid", "hard_sigmoid")  # bounded: one call for all gates

        def step(xt, states):
            h, c = states
            z = rec_matmul(xt, h)
            if whole:
                i, f, _, o = rec_act(z).chunk(4, -1)
                g = z.narrow(-1, 2 * u, u)
            else:
                i, f, g, o = z.chunk(4, -1)
                i, f, o = rec_act(i), rec_act(f), rec_act(o)
            c = torch.addcmul(f * c, i, act(g))
            return [o * act(c), c]

        return step


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

    def _input_bias(self):
        if not self.bias or self.reset_after:  # reset_after: bias_hh_n is multiplied by r
            return self.bias_ih_l0 if self.bias else None
        return self.bias_ih_l0 + self.bias_hh_l0

    def _recurrent(self):
        b = self.bias_hh_l0 if self.bias and self.reset_after else None
        return self.weight_hh_l0.t(), b

    def _step_inputs(self, xw):
        u = self.hidden_size
        return zip(*(p.unbind(-2) for p in xw.split([2 * u, u], -1)), strict=True)

    def _step(self, weights, mm, rec=None):
        """The step function (xt, states) -> states of one call (its constants bound)."""
        rec_act, act = self._activation(self.rec_act), self._activation(self.act)
        (wt, b), w, u = weights, self.weight_hh_l0, self.hidden_size
        wt_rz, wt_n = wt.split([2 * u, u], -1)
        one = wt.new_ones(())  # 1 - z with a Python 1 costs three times the subtraction

        def step(xt, states):
            (x_rz, x_n), h = xt, states[0]
            if self.reset_after:
                if rec is not None:
                    hh = self._gated(h, rec, w, b)
                else:
                    hh = torch.matmul(h, wt) if b is None else mm(b, h, wt)
                h_rz, h_n = hh.split([2 * u, u], -1)
                r, z = rec_act(x_rz + h_rz).chunk(2, -1)
                n = act(torch.addcmul(x_n, r, h_n))
            elif rec is None:
                r, z = rec_act(mm(x_rz, h, wt_rz)).chunk(2, -1)
                n = act(mm(x_n, r * h, wt_n))
            else:
                # recurrent dropout masks (Keras order z, r, h) on h before each gate's matmul
                hz, hr, hh = [h * rec[min(k, len(rec) - 1)] for k in range(3)]
                r = rec_act(x_rz[:, :u] + F.linear(hr, w[:u]))
                z = rec_act(x_rz[:, u:] + F.linear(hz, w[u : 2 * u]))
                n = act(x_n + F.linear(r * hh, w[2 * u :]))
            return [torch.addcmul(z * h, one - z, n)]

        return step


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
        if self._twins():
            (y, s_f), (y_rev, s_b) = self._together(x, mask, fs, bs)
        else:
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

    def _twins(self):
        """Whether the two layers run the same step code (the same class and configuration but for
        go_backwards and dropout)."""
        f, b = self.forward_layer, self.backward_layer
        keys = ("input_size", "hidden_size", "bias", "act", "rec_act", "reset_after")
        return (
            isinstance(f, KerasRNNMixin)
            and type(f) is type(b)
            and all(getattr(f, k) == getattr(b, k) for k in keys + ("return_sequences",))
        )

    def _together(self, x, mask, fs, bs):
        """Both layers' step loops as one: the (batch, n) states and step inputs of the two are
        stacked into (2, batch, n) and each step's matmul is one baddbmm, so a step costs the
        calls of one layer; the input projections are one baddbmm too. Torch's fused kernels and
        recurrent dropout run each layer alone."""
        f, b = self.forward_layer, self.backward_layer
        begun = f._begin(x, mask, fs), b._begin(x, mask, bs)
        if x.shape[1] == 0 or any(
            fused or rec is not None or (dp is not None and len(dp) > 1)
            for _, dp, _, _, rec, fused in begun
        ):
            return [
                layer._finish(*a, s is None)
                for layer, a, s in zip((f, b), begun, (fs, bs), strict=True)
            ]
        (x_f, dp_f, m_f, s_f, _, _), (x_b, dp_b, m_b, s_b, _, _) = begun
        xs = torch.stack([v if d is None else v * d[0] for v, d in ((x_f, dp_f), (x_b, dp_b))])
        xs, w = xs.flatten(1, 2), torch.stack([f.weight_ih_l0, b.weight_ih_l0]).transpose(1, 2)
        bias = f._input_bias(), b._input_bias()
        if bias[0] is None:
            xw = torch.bmm(xs, w)
        else:
            xw = torch.baddbmm(torch.stack(bias).unsqueeze(1), xs, w)
        xw = xw.unflatten(1, x.shape[:2])
        wt, bias = (
            torch.stack(w) if w[0] is not None else None
            for w in zip(f._recurrent(), b._recurrent(), strict=True)
        )
        weights = wt, (None if bias is None else bias.unsqueeze(1))
        states = [torch.stack(s) for s in zip(s_f, s_b, strict=True)]
        masks = None if mask is None else torch.stack([m_f, m_b])
        ys, states = f._steps(f._step_inputs(xw), masks, states, weights)
        y = torch.stack(ys, -2) if f.return_sequences else ys[-1]
        return [
            (layer._mask_output(y[i], m, s is None), [state[i] for state in states])
            for i, (layer, m, s) in enumerate(((f, m_f, fs), (b, m_b, bs)))
        ]


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
