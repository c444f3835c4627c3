"""Recurrent layers and wrappers: SimpleRNN, LSTM, GRU, RNN(cell), Bidirectional, TimeDistributed."""
from __future__ import annotations

from ..transforms import IDENTITY, Flip, Permute, ReorderBlocks, Take, Zeros
from . import PADDING, Choice, WeightDecl, declare, get
from ._shapes import last_dim, units

T = Permute((1, 0))
# Keras GRU gates are z, r, h; torch nn.GRU expects r, z, n.
GRU_ORDER = ReorderBlocks(0, (1, 0, 2), ("zrh", "rzn"))


def _has_bias(cfg):
    return cfg.get("use_bias", True)


def _gru_bias(cfg):
    if cfg.get("reset_after", True):
        return [("bias_ih_l0", Take(0).then(GRU_ORDER)), ("bias_hh_l0", Take(1).then(GRU_ORDER))]
    # reset_after=False: one (3u,) bias on the input side; torch's recurrent bias slot stays zero.
    return [("bias_ih_l0", GRU_ORDER), ("bias_hh_l0", Zeros())]


def _one_bias(cfg):
    """Keras adds one bias; torch adds bias_ih and bias_hh: the bias goes to bias_ih, bias_hh is zero."""
    return [("bias_ih_l0", IDENTITY), ("bias_hh_l0", Zeros())]


def _rnn_shape(cfg, shapes):
    s = shapes[0]
    units = cfg["units"]
    batch = s[1] if cfg.get("time_major") else s[0]  # tf.keras 2 time_major: (time, batch, features)
    out = (s[0], s[1], units) if cfg.get("return_sequences") else (batch, units)
    if cfg.get("return_state"):
        n_states = 2 if cfg.get("_cell") == "LSTM" else 1
        return [out] + [(batch, units)] * n_states
    return out


_GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}


def _rnn_weight_shapes(cls):
    """Expected (kernel, recurrent_kernel, bias) shapes of a SimpleRNN/LSTM/GRU (build() of its cell)."""
    def bias(cfg, shape):
        n = _GATES[cls] * units(cfg)
        return (2, n) if cls == "GRU" and cfg.get("reset_after", True) else (n,)

    return (lambda cfg, shape: (last_dim(cfg, shape), _GATES[cls] * units(cfg)),
            lambda cfg, shape: (units(cfg), _GATES[cls] * units(cfg)), bias)


def _rnn(cls, summary, ih="weight_ih_l0", hh="weight_hh_l0", gate_order=None, bias=None, notes=()):
    kt = T if gate_order is None else T.then(gate_order)
    kernel_shape, recurrent_shape, bias_shape = _rnn_weight_shapes(cls)
    declare(
        cls,
        family="recurrent",
        summary=summary,
        weights=(
            WeightDecl("kernel", torch=ih, transform=kt, shape=kernel_shape),
            WeightDecl("recurrent_kernel", torch=hh, transform=kt, shape=recurrent_shape),
            WeightDecl("bias", when=_has_bias, torch=bias or _one_bias, shape=bias_shape),
        ),
        output_shape=lambda cfg, shapes: _rnn_shape({**cfg, "_cell": cls}, shapes),
        keras_subobjects=("cell",),
        required=("units",),
        uses_mask=True,
        notes=notes,
    )


_rnn("SimpleRNN", "h_t = activation(x_t @ kernel + h_(t-1) @ recurrent_kernel + bias)")
_rnn("LSTM", "long short-term memory; gates i, f, c, o (torch i, f, g, o)",
     notes=("Keras has one bias: it becomes bias_ih, with bias_hh zero",
            "recurrent_activation hard_sigmoid differs between Keras 2 and Keras 3"))
_rnn("GRU", "gated recurrent unit; gates z, r, h (torch r, z, n)", gate_order=GRU_ORDER, bias=_gru_bias,
     notes=("reset_after=False (old default) cannot be expressed by nn.GRU",))


def _inner(cfg, key="layer"):
    sub = cfg.get(key)
    return (sub["class_name"], sub["config"]) if sub else (None, None)


def _wrapped(cfg, key, prefix):
    cls, sub = _inner(cfg, key)
    spec = get(cls) if cls else None
    if spec is None:
        return []
    return [WeightDecl(d.key, role=d.role, trainable=d.trainable, when=lambda c: True,
                       torch=(lambda c, d=d, sub=sub: [(f"{prefix}.{n}", t) for n, t in d.targets(sub)]),
                       why_no_torch=d.why_no_torch)
            for d in spec.weight_decls(sub)]


def _bidirectional_weights(cfg):
    back = "backward_layer" if cfg.get("backward_layer") else "layer"
    return _wrapped(cfg, "layer", "forward_layer") + _wrapped(cfg, back, "backward_layer")


def _bidirectional_shape(cfg, shapes):
    cls, sub = _inner(cfg)
    out = get(cls).output_shape(sub, shapes)
    outs = out if isinstance(out, list) else [out]
    y = outs[0]
    if cfg.get("merge_mode", "concat") == "concat":
        y = (*y[:-1], None if y[-1] is None else 2 * y[-1])
    if cfg.get("merge_mode", "concat") is None:
        return [y, y] + outs[1:] * 2
    return [y] + outs[1:] * 2 if len(outs) > 1 else y


declare(
    "Bidirectional",
    uses_mask=True,
    family="recurrent",
    summary="runs a recurrent layer forwards and backwards and merges the outputs (merge_mode)",
    weights=_bidirectional_weights,
    output_shape=_bidirectional_shape,
    keras_subobjects=("forward_layer", "backward_layer"),
    choices={"merge_mode": Choice(("sum", "mul", "ave", "concat", None))},  # keras/src/layers/rnn/bidirectional.py
)


def _td_shape(cfg, shapes):
    cls, sub = _inner(cfg)
    s = shapes[0]
    inner = get(cls).output_shape(sub, [(s[0], *s[2:])])
    return (inner[0], s[1], *inner[1:])


declare(
    "TimeDistributed",
    uses_mask=True, output_mask="keep",
    family="recurrent",
    summary="applies the wrapped layer to every time step",
    weights=lambda cfg: _wrapped(cfg, "layer", "layer"),
    output_shape=_td_shape,
    keras_subobjects=("layer",),
)


# Keras 3 RNN(cell) for the built-in cells: the cell's weights are the matching layer's (a .keras file
# keeps them under layers/<rnn>/cell/vars, or cell/cells/<cell name>/vars for a list of cells).
_CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}


def _cell_list(cfg):
    cls, sub = _inner(cfg, "cell")
    if cls == "StackedRNNCells":
        return [(c.get("class_name"), c.get("config") or {}) for c in (sub.get("cells") or [])]
    return [(cls, sub or {})] if cls else []


def _rnn_cell_weights(cfg):
    cells = _cell_list(cfg)
    out = []
    for i, (cls, sub) in enumerate(cells):
        spec = get(_CELLS.get(cls, ""))
        if spec is None:
            return []
        prefix = "" if len(cells) == 1 else f"cells.{i}."
        out += [WeightDecl(d.key, role=d.role, trainable=d.trainable, when=lambda c: True,
                           torch=(lambda c, d=d, sub=sub, p=prefix: [(p + n, t) for n, t in d.targets(sub)]),
                           why_no_torch=d.why_no_torch)
                for d in spec.weight_decls(sub)]
    return out


def _rnn_cell_shape(cfg, shapes):
    cells = _cell_list(cfg)
    if not cells or any(c not in _CELLS for c, _ in cells):
        return None
    cls, sub = cells[-1]
    out = _rnn_shape({**sub, "return_sequences": cfg.get("return_sequences"), "_cell": _CELLS[cls]}, shapes)
    if cfg.get("return_state"):
        s = shapes[0]
        states = [(s[0], int(c["units"])) for cls, c in cells for _ in range(_N_STATES[_CELLS[cls]])]
        return [out] + states
    return out


declare(
    "RNN",
    uses_mask=True,
    family="recurrent",
    summary="runs a recurrent cell (SimpleRNNCell, LSTMCell, GRUCell or a list of them) over time",
    weights=_rnn_cell_weights,
    output_shape=_rnn_cell_shape,
    keras_subobjects=("cell",),
    notes=("a list of cells (StackedRNNCells) is stored by cell name in .keras files: converted when the "
           "names sort in the list order",),
)


# ConvLSTM1D/2D/3D (keras/src/layers/rnn/conv_lstm.py): an LSTM whose matmuls are convolutions; gates
# i, f, c, o along the kernels' last axis. Weights stay in Keras's layout (the emitted cell permutes
# them to torch's conv layout at run time).
def _convlstm_shape(rank):
    def shape(cfg, shapes):
        s = shapes[0]
        if cfg.get("data_format", "channels_last") == "channels_first":
            return None
        k = _tuple(cfg.get("kernel_size"), rank)
        st = _tuple(cfg.get("strides", 1), rank)
        d = _tuple(cfg.get("dilation_rate", 1), rank)
        sp = []
        for i in range(rank):
            n = s[2 + i]
            if n is None:
                sp.append(None)
            elif cfg.get("padding", "valid") == "same":
                sp.append(-(-n // st[i]))
            else:
                sp.append((n - (k[i] - 1) * d[i] - 1) // st[i] + 1)
        one = (s[0], *sp, int(cfg["filters"]))
        out = (s[0], s[1], *sp, int(cfg["filters"])) if cfg.get("return_sequences") else one
        return [out, one, one] if cfg.get("return_state") else out
    return shape


def _tuple(v, n):
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),) * n


def _theano_flip(rank):
    """Keras 1 ConvLSTM2D written by Theano: both kernels are true convolutions (Keras 2's loader flips
    them with conv_utils.convert_kernel); Keras layout (k..., in, 4 * filters): flip the k axes."""
    return lambda cfg: Flip(tuple(range(rank))) if cfg.get("_theano_kernels") else IDENTITY


for _rank in (1, 2, 3):
    declare(
        f"ConvLSTM{_rank}D",
        family="recurrent",
        summary=f"LSTM with {_rank}D convolutions for the input and recurrent transforms; gates i, f, c, o",
        weights=(
            WeightDecl("kernel", torch="kernel", transform=_theano_flip(_rank)),
            WeightDecl("recurrent_kernel", torch="recurrent_kernel", transform=_theano_flip(_rank)),
            WeightDecl("bias", when=_has_bias, torch="bias"),
        ),
        output_shape=_convlstm_shape(_rank),
        uses_mask=True,
        keras_subobjects=("cell",),
        choices={"padding": Choice(PADDING)},
        notes=("the recurrent convolution is always 'same' with stride 1 (padding applies to the input one)",),
    )

# --- PyTorch emission ------------------------------------------------------------------------------
from . import activation_name, emits  # noqa: E402

_N_STATES = {"SimpleRNN": 1, "LSTM": 2, "GRU": 1}


def _act_name(cfg, key, default):
    return activation_name(cfg.get(key, default))


def _dropout_args(cls, cfg):
    """Train-mode dropout of one Keras recurrent layer/cell config, as keyword source ("" when none).

    keras/src/layers/rnn/{simple_rnn,lstm,gru}.py clamp the rates to [0, 1]; SimpleRNNCell applies any
    rate > 0 (rate 1: a zero mask), LSTMCell/GRUCell only 0 < rate < 1. recurrent_dropout != 0 switches
    LSTM/GRU to implementation 1, which draws one mask per gate (4 / 3) for both the input and h."""
    def rate(key):
        return min(1.0, max(0.0, float(cfg.get(key) or 0.0)))

    d, rd = rate("dropout"), rate("recurrent_dropout")
    n_masks = 1
    if cls != "SimpleRNN":
        n_masks = (4 if cls == "LSTM" else 3) if rd != 0.0 else 1
        d, rd = (r if 0.0 < r < 1.0 else 0.0 for r in (d, rd))
    if not d and not rd:
        return ""
    return f", dropout={d!r}, recurrent_dropout={rd!r}, n_masks={n_masks}"


def _rnn_module(e, cls, cfg, input_size, zero_output_for_mask):
    """Constructor source of the helper module for one Keras recurrent layer config."""
    if cls not in _N_STATES:
        e.unsupported(f"{cls} inside a wrapper is not converted")
    if input_size is None:
        e.unsupported("input feature size unknown")
    units = int(cfg["units"])
    act = _act_name(cfg, "activation", "tanh")
    e.runtime(f"Keras{cls}")
    # keyword arguments where they differ from the runtime class's defaults (kconv/runtime/recurrent.py)
    kw = {"bias": bool(cfg.get("use_bias", True)), "activation": e.keras_activation(act)}
    if cls == "SimpleRNN":
        fast = act in ("tanh", "relu")
        if act == "relu":
            kw["nonlinearity"] = repr(act)
    else:
        rec = _act_name(cfg, "recurrent_activation", "sigmoid")
        kw["recurrent_activation"] = e.keras_activation(rec)
        reset_after = bool(cfg.get("reset_after", True))
        fast = act == "tanh" and rec == "sigmoid" and (cls == "LSTM" or reset_after)
    kw.update(go_backwards=bool(cfg.get("go_backwards", False)),
              return_sequences=bool(cfg.get("return_sequences", False)),
              zero_output_for_mask=bool(zero_output_for_mask), fast=fast)
    if cls == "GRU":
        kw["reset_after"] = reset_after
    defaults = {"bias": True, "activation": repr("tanh"), "recurrent_activation": repr("sigmoid"),
                "go_backwards": False, "return_sequences": False, "zero_output_for_mask": False, "fast": False,
                "reset_after": True}
    args = "".join(f", {k}={v}" for k, v in kw.items() if k not in defaults or defaults[k] != v)
    return f"Keras{cls}({int(input_size)}, {units}{args}{_dropout_args(cls, cfg)})"


def _initial_state(e):
    """The initial_state input(s): a `initial_state=` tensor kwarg (Keras 3) or inputs after the first."""
    init = e.kw_input("initial_state")
    if init is None and e.n_inputs > 1:
        init = [e.input(i) for i in range(1, e.n_inputs)]
    if init is None:
        return "None"
    if not isinstance(init, list):
        init = [init]
    return "[" + ", ".join(init) + "]"


def _call_mask(e):
    """The mask the layer's call gets. Keras 3 fills a call's ``mask`` from its input only when the
    call has one tensor argument (keras/src/layers/layer.py ``__call__``, "Populate mask
    argument(s)"): a recurrent layer called with initial_state tensors runs unmasked there, unless
    the call passes ``mask=`` (its output still carries the input's mask). Keras 2 (the initial
    states are further inputs of the node) passes the input's mask to the call."""
    mask = e.mask(0)
    c = e.call
    if c.tensor_args is not None and "mask" not in c.tensor_kwargs and c.tensor_args + len(c.tensor_kwargs) > 1:
        return None
    return mask


def _call(e, m, x):
    """``m(x, mask=..., initial_state=...)``, the keyword arguments only where given."""
    args = [x]
    mask = _call_mask(e)
    if mask is not None:
        args.append(f"mask={mask}")
    if _initial_state(e) != "None":
        args.append(f"initial_state={_initial_state(e)}")
    return f"{m}({', '.join(args)})"


_STATE_NAMES = {1: ("h",), 2: ("h", "c")}


def _outputs_with_states(e, call, n_states, back="", out_mask=None):
    """``y, (y_h, y_c) = call``: the output and the returned states, named."""
    names = [e.var(i + 1, suffix=s) for i, s in enumerate(_STATE_NAMES[n_states])]
    y = e.var(0) if not back else e.temp("seq")
    e.line(f"{y}, ({', '.join(names)},) = {call}" if n_states == 1 else f"{y}, ({', '.join(names)}) = {call}")
    e.output(f"{y}{back}", mask=out_mask)
    for i, name in enumerate(names):
        e.output(name, index=i + 1, mask=None)


@emits("SimpleRNN", "LSTM", "GRU")
def _emit_rnn(e):
    cls = e.layer.class_name
    cfg = e.cfg
    # Stateful layers keep their state between calls in Keras; the emitted module starts every call
    # from zero states (or the given initial_state), i.e. Keras right after reset_states().
    m = e.module(_rnn_module(e, cls, cfg, e.in_shapes[0][-1], cfg.get("zero_output_for_mask", False)))
    mask = e.mask(0)
    x, back = e.input(0), ""
    if cfg.get("time_major"):
        # tf.keras 2 time_major=True: (time, batch, features) in, sequences out the same way; the states
        # are (batch, units) either way (tf_keras/src/layers/rnn/base_rnn.py swaps the axes around the loop)
        if mask is not None or _initial_state(e) != "None":
            e.unsupported("time_major=True with a mask or an initial_state")
        x = f"{x}.transpose(0, 1)"
        back = ".transpose(0, 1)" if cfg.get("return_sequences") else ""
    call = _call(e, m, x)
    out_mask = mask if cfg.get("return_sequences") else None
    if not cfg.get("return_state"):
        e.output(f"{call}[0]{back}", mask=out_mask)
        return
    _outputs_with_states(e, call, _N_STATES[cls], back, out_mask)


@emits("RNN")
def _emit_rnn_cell(e):
    """keras.layers.RNN(cell): the matching layer's module (one cell), or the cells' modules run one
    after the other over the whole sequence (a list of cells: keras/src/layers/rnn/stacked_rnn_cells.py
    feeds each cell's output to the next at every step, which is the same function)."""
    cfg = e.cfg
    cells = _cell_list(cfg)
    bad = [c for c, _ in cells if c not in _CELLS]
    if not cells or bad:
        e.unsupported(f"RNN over {', '.join(str(c) for c in bad) or 'no cell'} is not converted "
                      "(SimpleRNNCell, LSTMCell, GRUCell and lists of them are)")
    n_in = e.in_shapes[0][-1]
    seq = bool(cfg.get("return_sequences", False))
    zero = bool(cfg.get("zero_output_for_mask", False))
    if len(cells) == 1:
        cls, sub = _CELLS[cells[0][0]], cells[0][1]
        sub = {**sub, "return_sequences": seq, "go_backwards": bool(cfg.get("go_backwards", False))}
        _emit_recurrent(e, _rnn_module(e, cls, sub, n_in, zero), _N_STATES[cls], seq, cfg.get("return_state"))
        return
    names = [str(c.get("name")) for _, c in cells]
    if names != sorted(names) or len(set(names)) != len(names):
        e.unsupported("a list of cells whose names do not sort in list order (a .keras file stores them by "
                      f"name, so their storage order is not the call order): {names}")
    if cfg.get("return_state") or _initial_state(e) != "None":
        e.unsupported("return_state / initial_state with a list of cells")
    mods, size = [], n_in
    for i, (c, sub) in enumerate(cells):
        last = i == len(cells) - 1
        sub = {**sub, "go_backwards": False, "return_sequences": seq if last else True}
        mods.append(_rnn_module(e, _CELLS[c], sub, size, zero if last else False))
        size = sub["units"]
    e.runtime("KerasStackedRNN")
    m = e.module(f"KerasStackedRNN([{', '.join(mods)}], go_backwards={bool(cfg.get('go_backwards', False))})")
    _emit_recurrent(e, None, 0, seq, False, module=m)


def _emit_recurrent(e, source, n_states, seq, return_state, module=None):
    m = module or e.module(source)
    mask = e.mask(0)
    call = _call(e, m, e.input(0))
    out_mask = mask if seq else None
    if not return_state:
        e.output(f"{call}[0]", mask=out_mask)
        return
    _outputs_with_states(e, call, n_states, "", out_mask)


def _same(e, cls, cfg):
    """A wrapped layer's class and config as the class its declaration computes the same function as
    (LayerSpec.same_as: CuDNNLSTM -> LSTM), refused with a mask the wrapped class does not take."""
    spec = get(cls) if cls else None
    if spec is None or spec.same_as is None:
        return cls, cfg
    if e.has_mask() and not spec.uses_mask:
        e.unsupported(f"masked input ({cls} does not support masking)")
    return spec.same_as(cfg)


@emits("Bidirectional")
def _emit_bidirectional(e):
    cfg = e.cfg
    fcls, fcfg = _same(e, *_inner(cfg, "layer"))
    bcls, bcfg = (_same(e, *_inner(cfg, "backward_layer")) if cfg.get("backward_layer")
                  else (fcls, {**fcfg, "go_backwards": True}))
    seq = bool(fcfg.get("return_sequences", False))
    merge = cfg.get("merge_mode", "concat")
    if merge not in ("concat", "sum", "ave", "mul", None):
        e.unsupported(f"merge_mode {merge!r}")
    # keras/src/layers/rnn/bidirectional.py forces zero_output_for_mask = return_sequences on both layers.
    n_in = e.in_shapes[0][-1]
    fwd = _rnn_module(e, fcls, fcfg, n_in, seq)
    bwd = _rnn_module(e, bcls, bcfg, n_in, seq)
    e.runtime("KerasBidirectional")
    m = e.module(f"KerasBidirectional({fwd}, {bwd}, merge_mode={merge!r}, return_sequences={seq})")
    mask = e.mask(0)
    call = _call(e, m, e.input(0))
    out_mask = mask if seq else None
    n_out = 2 if merge is None else 1
    if n_out == 1 and not fcfg.get("return_state"):
        e.output(f"{call}[0][0]", mask=out_mask)  # (merged output,), states
        return
    tmp = e.temp("run")
    e.line(f"{tmp} = {call}")
    for i in range(n_out):
        e.output(f"{tmp}[0][{i}]", index=i, mask=out_mask)
    if fcfg.get("return_state"):
        n_states = _N_STATES[fcls] + _N_STATES[bcls]
        for i in range(n_states):
            e.output(f"{tmp}[1][{i}]", index=n_out + i, mask=None)


@emits("TimeDistributed")
def _emit_time_distributed(e):
    """The wrapped layer's own converter, run on (batch * time, ...) and reshaped back."""
    cls, sub = _inner(e.cfg)
    spec = get(cls) if cls else None
    if spec is None or spec.emit is None or cls in ("TimeDistributed", "Bidirectional") or cls in _N_STATES:
        e.unsupported(f"TimeDistributed({cls}) is not converted")
    if e.has_mask():  # keras/src/layers/rnn/time_distributed.py passes mask[t] only to layers taking one
        if spec.uses_mask:
            e.unsupported(f"masked input to TimeDistributed({cls}) is not converted")
        e.mask(0)
    s = e.in_shapes[0]
    if any(d is None for d in s[2:]):
        e.unsupported("unknown non-time input dimensions")
    inner_in = (None, *s[2:])
    inner_out = spec.output_shape(sub, [inner_in]) if spec.output_shape else None
    if isinstance(inner_out, list) or inner_out is None:
        e.unsupported(f"TimeDistributed({cls}) output shape")
    x = e.input(0)
    if not x.isidentifier():  # used twice below
        x = e.temp("in")
        e.line(f"{x} = {e.input(0)}")
    y = e.wrapped(cls, sub, f"{x}.reshape(-1, {', '.join(str(int(d)) for d in s[2:])})", inner_in, inner_out)
    e.output(f"{y}.unflatten(0, ({x}.shape[0], {x}.shape[1]))")


@emits("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
def _emit_convlstm(e):
    cfg = e.cfg
    rank = int(e.layer.class_name[8])
    if cfg.get("data_format", "channels_last") == "channels_first":
        e.unsupported("data_format='channels_first' ConvLSTM is not converted")
    if _initial_state(e) != "None":
        e.unsupported("initial_state for ConvLSTM is not converted")
    if e.has_mask():
        e.unsupported("a Keras mask entering ConvLSTM is not converted")
    pad = cfg.get("padding", "valid")
    if pad not in ("valid", "same"):
        e.unsupported(f"padding {pad!r}")
    if cfg.get("_theano_kernels") and (any(k % 2 == 0 for k in _tuple(cfg["kernel_size"], rank)) or (
            pad == "same" and any(st > 1 for st in _tuple(cfg.get("strides", 1), rank)))):
        # the recurrent convolution is 'same' too: Theano's 'half' pads k//2 on both sides
        e.unsupported("an even kernel or a strided 'same' convolution written by Theano (Theano's symmetric "
                      "'half' padding)")
    n_in = e.in_shapes[0][-1]
    if n_in is None:
        e.unsupported("input channels unknown")
    act = e.keras_activation(_act_name(cfg, "activation", "tanh"))
    rec = e.keras_activation(_act_name(cfg, "recurrent_activation", "sigmoid"))
    k = _tuple(cfg["kernel_size"], rank)
    st, d = _tuple(cfg.get("strides", 1), rank), _tuple(cfg.get("dilation_rate", 1), rank)
    e.runtime("KerasConvLSTM", "same_pad")
    seq = bool(cfg.get("return_sequences", False))
    src = (f"KerasConvLSTM({rank}, {int(n_in)}, {int(cfg['filters'])}, {k}, {st}, {d}, same={pad == 'same'}, "
           f"bias={bool(cfg.get('use_bias', True))}, activation={act}, recurrent_activation={rec}, "
           f"go_backwards={bool(cfg.get('go_backwards', False))}, return_sequences={seq}, "
           f"zero_output_for_mask={bool(cfg.get('zero_output_for_mask', False))})")
    _emit_recurrent(e, src, 2, seq, cfg.get("return_state"))
