"""Code generation: a Keras model graph -> the source of a standalone torch module (imports only torch).

Layout: the emitted forward keeps every tensor in Keras's layout, except that channels_last
convolution stacks run channels-first ("cf") inside; a tensor is permuted only where a layer needs
the other layout (the edges of a conv stack, Flatten, axis-bound ops that cannot be remapped).
"""
from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field

from .. import codecopy, extend, specs
from ..errors import ConfigError, UnsupportedError
from ..ir import Call, Layer, Model, TensorRef
from ..naming import identifier, module_names
from ..specs._shapes import cf_shape, same_order
from . import activations, pyformat

KERAS, CF = "keras", "cf"


def to_cf_perm(rank: int) -> tuple:
    return (0, rank - 1, *range(1, rank - 1))


def to_keras_perm(rank: int) -> tuple:
    return (0, *range(2, rank), 1)


def literal_tuple(dims) -> str:
    return "(" + ", ".join(str(int(d)) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def keras_axis_to_torch(axis: int, rank: int, layout: str) -> int:
    """The torch dim of Keras axis ``axis`` for a tensor of ``rank`` held in ``layout``."""
    a = axis + rank if axis < 0 else axis
    if layout == KERAS or a == 0:
        return a
    return 1 if a == rank - 1 else a + 1


@dataclass
class Value:
    expr: str
    layout: str
    shape: tuple | None  # Keras shape
    mask: str | None = None  # Keras's implicit (batch, time) boolean mask of this tensor, as an expression
    # zero padding: (the unpadded Value, ((before, after) per spatial axis)), so that a convolution
    # right after it can pad by itself instead (its F.pad line is then dropped as unused)
    padded: tuple | None = None


_UNSET = object()

@dataclass
class ClassSource:
    name: str
    init: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    registered: set = field(default_factory=set)
    varnames: dict = field(default_factory=dict)
    used_vars: set = field(default_factory=lambda: {"self", "torch", "F", "nn", "TRACE"})
    prefix: str = ""  # the state-dict path of the module this class is (nested models: 'outer.')
    keras_prefix: str = ""  # its Keras path (nested models: 'outer/')
    # (layer, call, len(init), len(forward)) before each layer call's code, and once after the last:
    # what each call emitted (kconv.emit.blocks groups by it)
    units: list = field(default_factory=list)
    reads: dict = field(default_factory=dict)  # (layer, node, index) -> how many calls read that tensor
    outputs: set = field(default_factory=set)  # (layer, node, index) of the model's outputs
    fresh: set = field(default_factory=set)  # variables that their only reader may overwrite (overwritable)
    converted: dict = field(default_factory=dict)  # (variable, layout) -> the variable holding it permuted
    layers: dict = field(default_factory=dict)  # layer name -> Layer, of the model this class is


class Emit:
    """What a layer's ``emit`` hook (``LayerSpec.emit``, kconv.specs) sees: its config, shapes and
    inputs, and where it writes code. The emitter API, all an emitter uses:

    - the call: ``cfg``, ``layer``, ``call`` (its kwargs, tensor_kwargs), ``in_shapes``, ``out_shapes``,
      ``n_inputs``, ``attr`` (the submodule name);
    - inputs: ``input(i, layout)`` / ``kw_input(name, layout)`` (expressions), ``value(ref)`` (a
      tensor's :class:`Value`: expression, layout, shape, mask) and ``as_layout(value, layout)``,
      ``reads(i)`` (how many calls read input ``i``), ``overwritable(i)`` (an in-place op on it is safe),
      ``producer_call(i)`` / ``take_producer_call(i)`` (input ``i`` as the module call that made it, taken
      over),
      ``layout(i)``, ``channels_last()``, ``conv_layout()``, ``torch_dim(axis, i, layout)``;
      masks: ``mask(i)``, ``has_mask()``, ``set_mask(index, mask)``;
    - the constructor: ``module(expr)`` (the layer's submodule), ``parameter(name, init)`` (a bare
      parameter of it), ``buffer(suffix, expr)``, ``default_ok(*names)``, ``runtime(*names)`` (kconv
      runtime classes / functions the code uses, copied into model.py), ``source(name, text)`` (an
      extension's code, copied likewise), ``keras_activation(name)``,
      ``ctor(cls, *args, defaults=, **kw)`` (constructor source without torch's defaults);
    - forward: ``line(code)``, ``var(index, suffix)``, ``temp(suffix)``, ``output(expr, ...)``,
      ``passthrough(i)``, ``activation(x, layout, shape)``, ``wrapped(...)`` (a wrapped layer's code);
    - ``unsupported(reason)``: refuse this layer (collected into one report, exit 3).
    """

    def __init__(self, gen: "Generator", cls: ClassSource, layer: Layer, node: int, attr: str, values: dict,
                 prefix: str = "", keras_prefix: str = ""):
        self.gen, self.cls, self.layer, self.node, self.attr, self.values = gen, cls, layer, node, attr, values
        self.prefix = prefix
        self.keras_prefix = keras_prefix
        self.call = layer.calls[node]
        self.cfg = layer.config
        self.in_shapes = [self._v(r).shape for r in self.call.inputs]
        self.out_shapes = self.call.output_shapes
        self._masks_set: set = set()
        self.mask_read = False

    # --- inputs -------------------------------------------------------------------------------
    def _v(self, ref: TensorRef) -> Value:
        return self.values[(ref.layer, ref.node, ref.index)]

    def value(self, ref: TensorRef) -> Value:
        """The tensor ``ref`` (an input or tensor keyword of the call) as the generator holds it."""
        return self._v(ref)

    def layout(self, i: int = 0) -> str:
        return self._v(self.call.inputs[i]).layout

    def input(self, i: int = 0, layout: str | None = KERAS) -> str:
        """Input ``i`` as an expression in ``layout`` (None: as it is). A tensor that several calls
        read is permuted once, into a variable (``input_layer_nchw``), not once per reader."""
        ref = self.call.inputs[i]
        return self.as_layout(self._v(ref), layout, self.reads(i))

    def reads(self, i: int = 0) -> int:
        """How many calls of this model read input ``i`` of this call."""
        ref = self.call.inputs[i]
        return self.cls.reads.get((ref.layer, ref.node, ref.index), 0)

    def overwritable(self, i: int = 0) -> bool:
        """Whether an op may overwrite input ``i`` in place (an activation, as torchvision's
        ``inplace=True``; a BatchNorm at inference): it is a variable bound by ``output(fresh=True)``
        (new memory, that no backward keeps), this call is its only reader (aliases made by identity
        layers counted), it is not an output of the model and carries no mask expression."""
        v = self._v(self.call.inputs[i])
        if v.expr not in self.cls.fresh or v.mask is not None:
            return False
        keys = [k for k, w in self.values.items() if w.expr == v.expr]
        if any(k in self.cls.outputs for k in keys):
            return False
        # each alias beyond the first was made by an identity layer reading the one before it
        return sum(self.cls.reads.get(k, 0) for k in keys) - (len(keys) - 1) == 1

    def producer_call(self, i: int = 0):
        """The Layer whose module call made input ``i`` when it is a variable bound by a statement
        ``name = self.<module>(<argument>)`` and only this call reads it (:meth:`overwritable`); else
        None. :meth:`take_producer_call` then takes the call over."""
        if self._producer_statement(i) is None:
            return None
        return self.cls.layers.get(self.call.inputs[i].layer)

    def _producer_statement(self, i: int):
        """(index, module, argument) of the statement binding input ``i`` (see producer_call)."""
        v = self._v(self.call.inputs[i])
        if not self.overwritable(i):
            return None
        lines = self.cls.forward
        for k in range(len(lines) - 1, -1, -1):
            if lines[k].startswith(f"{v.expr} = "):
                m = re.fullmatch(rf"{v.expr} = (self\.[A-Za-z_][\w.]*)\((.*)\)", lines[k])
                if m is None or not _balanced(m.group(2)):
                    return None
                # in trace mode the producer's trace line follows it
                if self.gen.trace and not (k + 1 < len(lines) and lines[k + 1].startswith("TRACE[")):
                    return None
                return k, m.group(1), m.group(2)
        return None

    def take_producer_call(self, i: int = 0) -> tuple[str, str]:
        """Drop the statement :meth:`producer_call` found (this call computes that module's output
        itself, later: nothing else reads it, and nothing may overwrite the argument, which the
        module reads too): (module, argument). In trace mode the producer's output is still
        recorded, by calling its module once more on the line of its trace (kconv verify traces the
        shipped code with lines inserted, none changed)."""
        k, mod, arg = self._producer_statement(i)
        v = self._v(self.call.inputs[i])
        lines = self.cls.forward
        if self.gen.trace:
            key = lines[k + 1][len("TRACE["):].split("] = ")[0]
            call = Value(f"{mod}({arg})", v.layout, v.shape)
            lines[k + 1] = f"TRACE[{key}] = {self.gen.convert_layout(call, KERAS)}"
        del lines[k]
        # the code of the calls after it (this one's included) starts a line earlier
        self.cls.units[:] = [(ly, n, n_init, f - (f > k)) for ly, n, n_init, f in self.cls.units]
        return mod, arg

    def as_layout(self, v: Value, layout: str | None = KERAS, reads: int = 1) -> str:
        """The expression of ``v`` in ``layout`` (permuted where needed); a tensor ``reads`` > 1 calls
        read is permuted once, into a variable the later readers share."""
        expr = self.gen.convert_layout(v, layout)
        key = (v.expr, layout)
        if key in self.cls.converted:
            return self.cls.converted[key]
        if expr == v.expr or ".permute(" not in expr or not v.expr.isidentifier() or reads < 2:
            return expr
        # named after the first reader (``conv_nchw``), so --blocks sees the same code in each block
        cand = self.temp(_LAYOUT_NAMES[layout].get(len(v.shape), layout))
        self.line(f"{cand} = {expr}")
        self.cls.converted[key] = cand
        return cand

    def kw_input(self, name: str, layout: str | None = KERAS):
        ref = self.call.tensor_kwargs.get(name)
        if ref is None:
            return None
        if isinstance(ref, list):
            return [self.gen.convert_layout(self.values[(r.layer, r.node, r.index)], layout) for r in ref]
        return self.gen.convert_layout(self.values[(ref.layer, ref.node, ref.index)], layout)

    def mask(self, i: int = 0):
        """The Keras mask of input ``i`` as a (batch, time) bool expression, or None.

        An explicit ``mask=`` input of the call (Keras 3 functional graphs) wins over the mask that
        travels with the input tensor (Sequential models, Keras 2 files). A list-valued explicit
        mask is indexed by ``i``. Reading it tells the generator the layer handled its mask.
        """
        self.mask_read = True
        ref = self.call.tensor_kwargs.get("mask")
        if ref is not None:
            if isinstance(ref, list):
                ref = ref[i] if i < len(ref) else None
                if ref is None:
                    return None
            return self.values[(ref.layer, ref.node, ref.index)].expr
        if i >= len(self.call.inputs):
            return None
        return self._v(self.call.inputs[i]).mask

    def has_mask(self) -> bool:
        """Whether any input arrives with a mask (explicit or implicit); does not count as reading it."""
        if self.call.tensor_kwargs.get("mask") is not None:
            return True
        return any(self._v(r).mask is not None for r in self.call.inputs)

    def set_mask(self, index: int, mask):
        """The Keras mask of output ``index`` (None: no mask). Overrides the default propagation."""
        self._masks_set.add(index)
        key = (self.layer.name, self.node, index)
        if key in self.values:
            self.values[key].mask = mask

    @property
    def n_inputs(self) -> int:
        return len(self.call.inputs)

    def channels_last(self) -> bool:
        return self.cfg.get("data_format", "channels_last") != "channels_first"

    def conv_layout(self) -> str:
        """The layout a conv-like layer wants: cf for channels_last models, Keras's own otherwise."""
        return CF if self.channels_last() else KERAS

    # --- code ---------------------------------------------------------------------------------
    def module(self, expr: str) -> str:
        """Declare the layer's submodule (``self.<layer name> = expr``); returns ``self.<name>``."""
        if self.attr not in self.cls.registered:
            self.cls.registered.add(self.attr)
            self.cls.init.append(f"self.{self.attr} = {expr}")
        return f"self.{self.attr}"

    def buffer(self, suffix: str, expr: str) -> str:
        """A constant tensor of the module (a registered, non-persistent buffer: it follows .to() and
        .double() but is not in the state dict)."""
        name = f"{self.attr}_{suffix}"
        if name not in self.cls.registered:
            self.cls.registered.add(name)
            self.cls.init.append(f"self.register_buffer({name!r}, {expr}, persistent=False)")
        return f"self.{name}"

    def parameter(self, name: str, init: str) -> str:
        """A parameter of the layer that no torch module holds: ``self.<layer>.<name> =
        nn.Parameter(init)`` (on an empty ``nn.Module`` named after the layer, so that the state-dict key is
        ``<layer>.<name>``); returns ``self.<layer>``."""
        m = self.module("nn.Module()")
        if (self.attr, name) not in self.cls.registered:
            self.cls.registered.add((self.attr, name))
            self.cls.init.append(f"{m}.{name} = nn.Parameter({init})")
        return m

    def runtime(self, *names: str):
        """kconv runtime classes or functions the emitted code uses: copied into model.py."""
        self.gen.helpers.update(names)

    def source(self, name: str, text: str):
        """Module-level code defining ``name`` (an extension's class or function, kconv.extend) copied
        into model.py; two different definitions of one name are refused."""
        prev = self.gen.sources.get(name)
        if prev is not None and prev != text:
            self.unsupported(f"two extensions define {name} differently")
        self.gen.sources[name] = text

    def keras_activation(self, name: str) -> str:
        """Source naming activation ``name`` for a runtime class's ``keras_activation()`` (a recurrent
        cell's: a name, not a lambda, so the module pickles and scripts); refuses what is not converted."""
        if not activations.supported(name) or name in activations.AXIS:
            self.unsupported(f"recurrent activation {name!r} is not converted")
        self.gen.activation_fns.add(name)
        return repr(name)

    @staticmethod
    def ctor(cls: str, *args, defaults: dict | None = None, **kwargs) -> str:
        """``cls(args, name=value, ...)`` without the keyword arguments equal to ``defaults`` (module
        function :func:`ctor`)."""
        return ctor(cls, *args, defaults=defaults, **kwargs)

    def default_ok(self, torch_name: str, shape: tuple, fill, dtype: str = "float32"):
        """This tensor of the module has no Keras weight: it holds ``fill``, the value the module's
        constructor gives it (e.g. BatchNorm weight 1 when Keras has scale=False, num_batches_tracked
        0). Stated here because the weights are written without building the module; the import
        check confirms the shape and dtype, the conversion tests the value."""
        self.gen.defaults[f"{self.prefix}{self.attr}.{torch_name}"] = (tuple(shape), dtype, fill)

    def line(self, code: str):
        self.cls.forward.append(code)

    def var(self, index: int = 0, suffix: str = "") -> str:
        """The forward-local variable holding output ``index`` of this call (unique in the class);
        ``suffix`` names it ``<layer>_<suffix>`` (a returned state: ``lstm_h``)."""
        key = (self.layer.name, self.node, index)
        if key not in self.cls.varnames:
            base = local_name(self.layer.name)
            if suffix:
                base = cand = f"{base}_{suffix}" if self.node == 0 else f"{base}_{self.node}_{suffix}"
            else:
                cand = base if (self.node, index) == (0, 0) else f"{base}_{self.node}_{index}"
            i = 1
            while cand in self.cls.used_vars:
                cand = f"{base}_v{i}"
                i += 1
            self.cls.used_vars.add(cand)
            self.cls.varnames[key] = cand
            self.gen.var_layers.setdefault(cand, (self.keras_prefix + self.layer.name, self.layer.class_name))
        return self.cls.varnames[key]

    def temp(self, suffix: str) -> str:
        """A fresh forward-local variable name ``<output var>_<suffix>`` (unique in the class)."""
        base = f"{self.var(0)}_{suffix}"
        cand, i = base, 1
        while cand in self.cls.used_vars:
            cand = f"{base}{i}"
            i += 1
        self.cls.used_vars.add(cand)
        return cand

    def output(self, expr: str, layout: str = KERAS, index: int = 0, activation: bool = False, mask=_UNSET,
               padded=None, fresh: bool = False):
        """Bind output ``index`` to ``expr`` (applying the layer's ``activation`` when asked).

        ``fresh``: ``expr`` makes new memory that no other variable holds and that its op's backward does
        not keep (a convolution's, a matmul's, a batch norm's or a sum's result; not an activation's,
        whose backward reads its output): the activation is applied to it in place, and without one,
        the next layer may overwrite it (:meth:`overwritable`).

        ``mask``: the output's Keras mask expression (None: none); left out, Keras's default
        propagation of the layer's declaration applies (LayerSpec.output_mask). ``padded``: (the input
        :class:`Value`, ((before, after) per spatial axis)) when the output is that input zero-padded:
        a 'valid' convolution reading only it pads by itself instead (kconv.specs.conv)."""
        shape = self.out_shapes[index] if index < len(self.out_shapes) else None
        if activation and activations.activation_name(self.cfg.get("activation", "linear")) != "linear":
            expr = self.activation(expr, layout, shape, inplace=fresh)
            fresh = False
        name = self.var(index)
        if expr != name:
            self.line(f"{name} = {expr}")
        if fresh and expr != name:
            self.cls.fresh.add(name)
        self.values[(self.layer.name, self.node, index)] = Value(name, layout, shape, padded=padded)
        if mask is not _UNSET:
            self.set_mask(index, mask)
        self._trace(index)

    def _trace(self, index: int):
        """In trace mode, record the output in Keras layout under the layer's Keras path (verify)."""
        if not self.gen.trace:
            return
        v = self.values[(self.layer.name, self.node, index)]
        key = self.keras_prefix + self.layer.name + (f"[{self.node}][{index}]" if (self.node, index) != (0, 0) else "")
        # a copy of what a later activation or BatchNorm may overwrite in place (Emit.overwritable)
        copy = ".clone()" if v.expr in self.cls.fresh else ""
        self.line(f"TRACE[{key!r}] = {self.gen.convert_layout(v, KERAS)}{copy}")

    def passthrough(self, i: int = 0, index: int = 0):
        """Output ``index`` is input ``i`` unchanged (identity layers): no code, same layout."""
        v = self._v(self.call.inputs[i])
        self.values[(self.layer.name, self.node, index)] = Value(v.expr, v.layout, v.shape)
        self._trace(index)

    def activation(self, x: str, layout: str, shape, inplace: bool = False) -> str:
        """The layer's ``activation`` applied to ``x`` (in place where torch has an in-place form and
        ``inplace``: ``x`` is a temporary or :meth:`overwritable`)."""
        act = self.cfg.get("activation", "linear")
        rank = len(shape) if shape else 2
        return activations.expr(act, x, dim=keras_axis_to_torch(-1, rank, layout), keras_major=self.gen.keras_major,
                                where=self.layer.name, inplace=inplace)

    def unsupported(self, reason: str):
        raise _Unsupported(reason)

    def wrapped(self, class_name: str, cfg: dict, x: str, in_shape: tuple, out_shape: tuple) -> str:
        """Emit the code of a layer this one wraps (TimeDistributed's): declared class ``class_name``
        with config ``cfg`` applied to the Keras-layout expression ``x`` of shape ``in_shape``, as the
        submodule ``<layer>.layer``; returns its output expression in Keras layout (not traced)."""
        self.module("nn.Module()")
        ref = TensorRef(f"{self.layer.name}/<step input>", 0, 0)
        inner = Layer(name=f"{self.layer.name}_layer", class_name=class_name, config=cfg,
                        calls=[Call(inputs=[ref], output_shapes=[out_shape])])
        values = {(ref.layer, 0, 0): Value(x, KERAS, in_shape)}
        sub = Emit(self.gen, self.cls, inner, 0, f"{self.attr}.layer", values, self.prefix, self.keras_prefix)
        sub._trace = lambda index: None
        specs.get(class_name).emit(sub)
        return self.gen.convert_layout(values[(inner.name, 0, 0)], KERAS)

    def torch_dim(self, axis: int, i: int = 0, layout: str | None = None) -> int:
        shape = self.in_shapes[i]
        return keras_axis_to_torch(axis, len(shape), layout or self.layout(i))


class _Unsupported(Exception):
    pass


def layer_problems(layer: Layer) -> str | None:
    """Why a layer cannot be converted (None if it can, as far as can be told before emitting)."""
    spec = specs.get(layer.class_name)
    if layer.model is not None or layer.class_name == "InputLayer":
        return None
    if spec is None:
        return "unknown layer class"
    if spec.emit is None:
        return "no converter yet"
    # tf.keras 2 RNNs may run time-major ((time, batch, features) in and out): converted for the plain
    # SimpleRNN/LSTM/GRU layers (kconv.specs.recurrent), not inside wrappers or RNN(cell).
    wrapped = [layer.config.get(k, {}).get("config", {}) for k in ("layer", "backward_layer")
               if isinstance(layer.config.get(k), dict)]
    if layer.class_name not in ("SimpleRNN", "LSTM", "GRU") and any(
            c.get("time_major") for c in (layer.config, *wrapped)):
        return "time_major=True"
    act = layer.config.get("activation")
    if act is not None and not activations.supported(activations.activation_name(act)):
        return f"activation {activations.activation_name(act)!r}"
    return None


class Generator:
    def __init__(self, model: Model, channels_first_io: bool = False, trace: bool = False, blocks: bool = False):
        """``trace``: the emitted module also records every layer output, in Keras layout, in the
        module-level dict ``TRACE`` (keys: Keras layer paths, nested models as 'outer/inner').
        Used by verify --per-layer; the shipped model.py is generated without it. ``blocks``: layers
        sharing a block name prefix become submodules (kconv.emit.blocks; keys: blocks.torch_key)."""
        self.trace = trace
        self.blocks = blocks
        self.key_map: dict = {}
        self.root = model
        self.keras_major = int(model.keras_version.split(".")[0]) if model.keras_version[:1].isdigit() else 3
        self.channels_first_io = channels_first_io
        self.classes: list[ClassSource] = []
        self.helpers: set[str] = set()
        self.class_names: set[str] = set()
        self.defaults: dict[str, tuple] = {}  # torch key -> (shape, dtype, fill): see Emitter.default_ok
        self.activation_fns: set[str] = set()  # names passed to keras_activation (recurrent layers)
        self.sources: dict[str, str] = {}  # extension code copied into model.py (kconv.extend)
        # extension and runtime code's names: no class or forward variable may shadow them (a layer named
        # conv_bn, MobileNetV3's, must not hide the runtime function conv_bn)
        self.reserved = extend.source_names() | set(codecopy.runtime())
        self.class_names |= self.reserved
        # forward variable -> (Keras layer path, class): names the layer of a failing line (verify)
        self.var_layers: dict[str, tuple[str, str]] = {}

    def convert_layout(self, v: Value, layout: str | None) -> str:
        if layout is None or layout == v.layout or v.shape is None or len(v.shape) < 3:
            return v.expr
        if same_order(v.shape) and None not in v.shape[1:]:
            # one channel, or no spatial extent: both layouts hold the elements in the same order, and
            # a reshape gives the other one with plain (contiguous) strides
            target = cf_shape(v.shape) if layout == CF else v.shape
            return f"{v.expr}.flatten(1).unflatten(1, {literal_tuple(target[1:])})"
        rank = len(v.shape)
        perm = to_cf_perm(rank) if layout == CF else to_keras_perm(rank)
        return f"{v.expr}.permute{perm}"

    def check(self) -> dict:
        """Layers that cannot be converted, known before emitting: {class: [(path, why)]}."""
        bad: dict[str, list] = {}

        def walk(model, prefix):  # not Model.walk: its dotted paths mangle names with dots (tf.nn.relu)
            for layer in model.layers:
                yield prefix + layer.name, layer
                if layer.model is not None:
                    yield from walk(layer.model, prefix + layer.name + "/")

        for path, layer in walk(self.root, ""):
            why = layer_problems(layer)
            if why:
                bad.setdefault(layer.class_name, []).append((path, why))
        return bad

    def _unsupported(self, e: "Emit", reason):
        """Collect an unsupported layer (reason None: only stub its outputs) and keep going, so that
        one report lists every unsupported layer of the model."""
        if reason is not None:
            self.problems.setdefault(e.layer.class_name, []).append((e.keras_prefix + e.layer.name, reason))
        for index in range(max(1, len(e.out_shapes))):
            key = (e.layer.name, e.node, index)
            if key not in e.values:
                shape = e.out_shapes[index] if index < len(e.out_shapes) else None
                e.values[key] = Value("None", KERAS, shape)

    def generate(self) -> str:
        self.problems: dict[str, list] = self.check()
        self._class(self.root, "Model")
        if self.problems:
            raise UnsupportedError(self.problems)
        if self.blocks:
            from .blocks import group_blocks

            group_blocks(self)
        self._channels_last_kernels()
        generated = {"keras_activation"} if self.activation_fns else set()
        runtime = codecopy.runtime_definitions(self.helpers, generated)  # kconv/runtime, dependencies first
        clash = sorted({d.name for d in runtime} & set(self.sources))
        if clash:
            raise extend.ExtensionError(f"{', '.join(clash)}: defined both by an extension and by kconv's runtime "
                                        "code that this model uses (kconv/runtime): rename it in the extension")
        blocks = [d.source for d in runtime]
        if self.activation_fns:
            blocks.insert(0, activations.function_source(self.activation_fns, self.keras_major))
        blocks += list(self.sources.values())  # extension code (kconv.extend)
        blocks += [self._render(cls) for cls in reversed(self.classes)]  # nested classes first
        body = "\n\n\n".join(b.strip("\n") for b in blocks)
        imports = ["import torch"] if re.search(r"\btorch\.", body) else []
        if re.search(r"\bF\.", body):
            imports.append("import torch.nn.functional as F")
        imports.append("from torch import nn")
        head = '"""Generated by kconv from a Keras model. Imports only torch."""\n\n' + "\n".join(imports)
        if self.trace:
            head += "\n\nTRACE = {}  # kconv trace mode: every layer output, in Keras layout"
        return head + "\n\n\n" + body + "\n"

    def _channels_last_kernels(self):
        """NHWC inputs permuted to NCHW are channels_last tensors, and so is every activation computed
        from them; torch copies a contiguous 2D convolution kernel into the input's layout at every call
        (ResNet50's 3x3 kernels: 45 MB a call; 11% of a call at batch 1, 1 thread). ``Model()`` keeps
        its ``nn.Conv2d`` kernels channels_last instead (values, keys and shapes unchanged; 1x1 and
        depthwise kernels are the same either way). Not for channels-first inputs or models."""
        if self.channels_first_io:
            return
        for _, layer in self.root.walk():
            inner = layer.config.get("layer")
            cfgs = [layer.config] + ([inner.get("config") or {}] if isinstance(inner, dict) else [])
            if any(c.get("data_format") == "channels_first" for c in cfgs):
                return
        if not any("nn.Conv2d(" in line for cls in self.classes for line in cls.init):
            return
        top = next(cls for cls in self.classes if cls.name == "Model")
        top.init += [
            "# NHWC inputs, permuted, are channels_last tensors, and so is every activation after them:",
            "# the convolution kernels too, or torch would copy each one into that layout at every call",
            "for m in self.modules():",
            "    if isinstance(m, nn.Conv2d):",
            "        m.to(memory_format=torch.channels_last)",
        ]

    def _render(self, cls: ClassSource) -> str:
        lines = [f"class {cls.name}(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        lines += _layout(cls.init, "        ")
        lines.append("")
        lines.append(f"    def forward(self, {', '.join(cls.args)}):")
        lines += _layout(_inline_single_use(_drop_unused(cls.forward)), "        ")
        return "\n".join(lines)

    def _class(self, model: Model, name: str, top: bool = True, prefix: str = "", keras_prefix: str = "",
               in_layouts=None) -> tuple[str, list[str]]:
        """Emit the class of ``model``: (its name, the layouts of its outputs). The top class takes and
        returns Keras's layout (channels-first with --channels-first); a nested model's class takes its
        inputs in ``in_layouts`` (the layouts its caller holds them in) and returns its outputs in the
        layouts they are computed in, so a conv stack runs through nested models without permutes."""
        base = name
        i = 1
        while name in self.class_names:
            name = f"{base}{i}"
            i += 1
        self.class_names.add(name)
        cls = ClassSource(name, prefix=prefix, keras_prefix=keras_prefix, layers={ly.name: ly for ly in model.layers})
        cls.used_vars |= self.reserved
        self.classes.append(cls)
        attrs = module_names([ly.name for ly in model.layers])
        values: dict = {}
        sub_classes: dict = {}
        sub_layouts: dict = {}  # nested model -> the layouts its class takes its inputs in (None: Keras's)
        cf_io = top and self.channels_first_io
        for ref in model.inputs:
            layer = model.layer(ref.layer)
            arg = attrs[layer.name] + ("_" if attrs[layer.name] in _BUILTINS else "")
            cls.args.append(arg)
            cls.used_vars.add(arg)
            cls.varnames[(ref.layer, ref.node, ref.index)] = arg
            shape = layer.calls[0].output_shapes[0] if layer.calls and layer.calls[0].output_shapes else None
            if top and shape is None:
                raise ConfigError(layer.name, "the file records no shape for this model input (batch_shape): "
                                              "Keras cannot build the model without it")
            if in_layouts is not None:
                layout = in_layouts[len(cls.args) - 1]
            else:
                layout = CF if cf_io and shape is not None and len(shape) >= 3 else KERAS
            values[(ref.layer, ref.node, ref.index)] = Value(arg, layout, shape)
        cls.outputs = {(r.layer, r.node, r.index) for r in model.outputs}
        order = self._order(model)
        for layer, node in order:
            for r in layer.calls[node].inputs:
                key = (r.layer, r.node, r.index)
                cls.reads[key] = cls.reads.get(key, 0) + 1
        for layer, node in order:
            if layer.class_name == "InputLayer" and not layer.calls[node].inputs:
                continue
            cls.units.append((layer, node, len(cls.init), len(cls.forward)))
            if layer.model is not None:
                e = Emit(self, cls, layer, node, attrs[layer.name], values, prefix, keras_prefix)
                if layer.name not in sub_classes:
                    trace = self.trace
                    if layer.wraps_model:  # its layers see (batch * time, ...) tensors: not traced
                        self.trace = False
                    ins = None if layer.wraps_model or e.n_inputs != len(layer.model.inputs) else [
                        e.layout(i) for i in range(e.n_inputs)]
                    try:
                        sub_classes[layer.name] = self._class(layer.model, _class_name(layer.name), top=False,
                                                              prefix=f"{prefix}{attrs[layer.name]}.",
                                                              keras_prefix=f"{keras_prefix}{layer.name}/",
                                                              in_layouts=ins)
                    finally:
                        self.trace = trace
                    sub_layouts[layer.name] = ins
                sub, out_layouts = sub_classes[layer.name]
                ins = sub_layouts[layer.name]
                if e.has_mask():
                    self._unsupported(e, "a Keras mask entering a nested model is not converted")
                    continue
                mod = e.module(f"{sub}()")
                if layer.wraps_model:
                    self._time_distributed_model(e, mod)
                    continue
                args = ", ".join(e.input(i, KERAS if ins is None else ins[i]) for i in range(e.n_inputs))
                outs = layer.model.outputs
                if len(outs) == 1:
                    e.output(f"{mod}({args})", layout=out_layouts[0])
                else:
                    tmp = e.var(0) + "_outs"
                    e.line(f"{tmp} = {mod}({args})")
                    for i in range(len(outs)):
                        e.output(f"{tmp}[{i}]", layout=out_layouts[i], index=i)
                continue
            spec = specs.get(layer.class_name)
            e = Emit(self, cls, layer, node, attrs[layer.name], values, prefix, keras_prefix)
            if layer_problems(layer):  # already reported by check()
                self._unsupported(e, None)
                continue
            try:
                spec.emit(e)
                _class_comment(e, cls.units[-1][3])  # (where its code starts: take_producer_call moves it)
                self._propagate_mask(e)
                self._freeze(e)
            except _Unsupported as exc:
                self._unsupported(e, str(exc))
            except Exception:
                # A config the loader let through is refused by the emitter as a ConfigError (exit 2);
                # anything else raised here is a bug in kconv (exit 4), never the user's config. After
                # an unsupported layer, a later failure may be its echo: the report lists the cause.
                if not self.problems:
                    raise
                self._unsupported(e, None)
        cls.units.append((None, None, len(cls.init), len(cls.forward)))
        outs, out_layouts = [], []
        for ref in model.outputs:
            v = values[(ref.layer, ref.node, ref.index)]
            layout = v.layout if in_layouts is not None else CF if cf_io else KERAS
            outs.append(self.convert_layout(v, layout))
            out_layouts.append(layout)
        cls.forward.append("return " + (outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"))
        return name, out_layouts

    def _freeze(self, e: "Emit"):
        """Parameters that fine-tuning must not change get requires_grad=False in the constructor: those
        of a Keras layer (or enclosing model) with trainable=False, and the zero slots Keras has no term
        for (an LSTM's bias_hh: trained, it would become a second bias Keras does not have). Weights
        that are never trainable (moving statistics, quantization scales) are buffers already."""
        if (e.attr, "frozen") in e.cls.registered:
            return
        e.cls.registered.add((e.attr, "frozen"))
        from ..transforms import Zeros

        names = []
        for w, d in specs.declared_weights(e.layer):
            if d is None:
                continue
            for name, t in d.targets(e.layer.config):
                if (not w.trainable and d.trainable_for(e.layer.config)) or isinstance(t, Zeros):
                    names.append(name)
        if names:
            e.cls.init.append("# not trained in Keras")
        for n in names:
            e.cls.init.append(f"self.{_attr_path(f'{e.attr}.{n}')}.requires_grad_(False)")

    def _time_distributed_model(self, e: "Emit", mod: str):
        """TimeDistributed(model): the model's module on (batch * time, ...), reshaped back."""
        outs = e.layer.model.outputs
        s = e.in_shapes[0] if e.in_shapes else None
        if e.n_inputs != 1 or len(outs) != 1 or len(e.layer.model.inputs) != 1:
            self._unsupported(e, "TimeDistributed around a model with several inputs or outputs is not converted")
            return
        if s is None or len(s) < 3 or any(d is None for d in s[2:]) or not e.out_shapes or e.out_shapes[0] is None:
            self._unsupported(e, "TimeDistributed(model): unknown non-time input dimensions")
            return
        x = e.input(0)
        if not x.isidentifier():  # used twice below
            x = e.temp("in")
            e.line(f"{x} = {e.input(0)}")
        y = e.temp("step")
        e.line(f"{y} = {mod}({x}.reshape(-1, {', '.join(str(int(d)) for d in s[2:])}))")
        e.output(f"{y}.unflatten(0, ({x}.shape[0], {x}.shape[1]))", mask=None)

    def _propagate_mask(self, e: "Emit"):
        """Give each output of the call its Keras mask, unless the emitter set it (Emit.set_mask), as the
        layer's declaration says (LayerSpec.uses_mask, output_mask). In Sequential models and Keras 2
        files a mask travels implicitly with the tensor; Keras 3 records it as an explicit ``mask=``
        input only for layers whose call() takes one (Emit.mask reads either)."""
        cls = e.layer.class_name
        spec = specs.get(cls)
        if e.has_mask() and spec.uses_mask and not e.mask_read:
            raise _Unsupported("Keras uses the input mask in this layer; masked input is not converted here")
        n_out = max(1, len(e.out_shapes))
        for index in range(n_out):
            key = (e.layer.name, e.node, index)
            if index in e._masks_set or key not in e.values:
                continue
            mask = None
            if spec.output_mask == "keep" and index == 0:
                mask = e.mask(0) if e.has_mask() else None
            elif spec.output_mask == "merge" and index == 0 and e.has_mask():
                # Keras 3 ORs the masks when every input has one (keras/src/layers/merging/base_merge.py;
                # Concatenate on the last axis amounts to the same); tf_keras ANDs the masks that exist.
                masks = [e.mask(i) for i in range(e.n_inputs)]
                if cls == "Concatenate" and e.cfg.get("axis", -1) not in (-1, len(e.in_shapes[0]) - 1):
                    raise _Unsupported("a Keras mask through Concatenate on a non-feature axis is not converted")
                present = [m for m in masks if m is not None]
                if self.keras_major >= 3:
                    mask = None if len(present) < len(masks) else "(" + " | ".join(present) + ")"
                else:
                    mask = "(" + " & ".join(present) + ")"
            if mask is not None and key in e.values:
                v = e.values[key]
                e.values[key] = Value(v.expr, v.layout, v.shape, mask)

    def _order(self, model: Model):
        """Calls in an order where inputs come first (the config order usually is one)."""
        done = {(r.layer, r.node, r.index) for r in model.inputs}
        calls = [(ly, n) for ly in model.layers for n in range(len(ly.calls))
                 if not (ly.class_name == "InputLayer" and not ly.calls[n].inputs)]
        out = []
        while calls:
            rest = []
            for ly, n in calls:
                call = ly.calls[n]
                refs = list(call.inputs)
                for v in call.tensor_kwargs.values():
                    refs += v if isinstance(v, list) else [v]
                if all((r.layer, r.node, r.index) in done or _is_model_input(model, r) for r in refs):
                    out.append((ly, n))
                    for i in range(max(1, len(call.output_shapes))):
                        done.add((ly.name, n, i))
                else:
                    rest.append((ly, n))
            if len(rest) == len(calls):
                raise ConfigError(model.name, "cannot order the layer calls (cycle?)")
            calls = rest
        return out


def literal(v) -> str:
    """Python source of a constant as a person writes it: a tuple of equal ints as one int (torch
    layers take either), strings in double quotes."""
    if isinstance(v, tuple) and v and all(type(x) is int and x == v[0] for x in v):
        return str(v[0])
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if isinstance(v, str):
        return pyformat.requote(repr(v))
    return repr(v)


def ctor(cls: str, *args, defaults: dict | None = None, **kwargs) -> str:
    """``cls(args, name=value, ...)`` leaving out the keyword arguments equal to their default in
    ``defaults`` (torch's), as in ``nn.Conv2d(64, 64, 3, padding=1)``."""
    defaults = defaults or {}
    parts = [literal(a) for a in args]
    for k, v in kwargs.items():
        if k in defaults and literal(v) == literal(defaults[k]):
            continue
        parts.append(f"{k}={literal(v)}")
    return f"{cls}({', '.join(parts)})"




_BUILTINS = frozenset(dir(builtins))


def local_name(name: str) -> str:
    """A forward-local variable for Keras name ``name``: its identifier, not shadowing a builtin
    (a layer named 'any' gives ``any_``)."""
    ident = identifier(name)
    return ident + "_" if ident in _BUILTINS else ident


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Layers whose torch code says what they are (an operator, torch.cat, F.pad, an activation)
_SHOWN = frozenset({
    "Activation", "ReLU", "Softmax", "ELU", "LeakyReLU", "Add", "Subtract", "Multiply", "Average", "Maximum",
    "Minimum", "Concatenate", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Flatten", "Reshape",
    "Permute",
})


def _class_comment(e: "Emit", start: int):
    """A ``# Class`` line above a layer's forward code when neither its module nor its code shows
    which Keras layer it is (``torch.cat`` for Concatenate; not above ``self.dense(...)``)."""
    lines = e.cls.forward[start:]
    cls = e.layer.class_name
    if (not lines or e.attr in e.cls.registered or cls in _SHOWN or cls.startswith("ops.")
            or _norm(cls) in _norm(" ".join(lines))):
        return
    e.cls.forward.insert(start, f"# {ascii(e.layer.class_name)[1:-1]}")


_ASSIGN = re.compile(r"([A-Za-z_]\w*) = (.*)$")


def _drop_unused(lines: list[str]) -> list[str]:
    """Drop assignments of module-free expressions whose variable nothing reads (a mask no layer
    uses), repeatedly."""
    dead = _dead_lines(lines)
    return [line for i, line in enumerate(lines) if i not in dead]


def _dead_lines(lines: list[str]) -> set[int]:
    """The indices of the lines :func:`_drop_unused` drops."""
    dead: set[int] = set()
    while True:
        text = "\n".join(line for i, line in enumerate(lines) if i not in dead)
        found = None
        for i, line in enumerate(lines):
            m = _ASSIGN.match(line)
            if (i not in dead and m and "self." not in m.group(2)
                    and len(re.findall(rf"(?<![\w.]){m.group(1)}\b", text)) == 1):  # not F.pad for pad
                found = i
                break
        if found is None:
            return dead
        dead.add(found)


_LAYOUT_NAMES = {CF: {3: "ncl", 4: "nchw", 5: "ncdhw"}, KERAS: {3: "nlc", 4: "nhwc", 5: "ndhwc"}}
_PERMUTED = re.compile(r"(\w+_(?:ncl|nchw|ncdhw|nlc|nhwc|ndhwc)\d*) = (\w+\.permute\([\d, ]+\))$")


def _inline_single_use(lines: list[str]) -> list[str]:
    """Put a permuted view (Emit.input) that only one statement reads back into that statement."""
    out = list(lines)
    for line in lines:
        m = _PERMUTED.match(line)
        if m is None:
            continue
        name, expr = m.groups()
        if len(re.findall(rf"\b{name}\b", "\n".join(out))) != 2:
            continue
        out.remove(line)
        out = [re.sub(rf"\b{name}\b", expr, ln) for ln in out]
    return out


def _layout(lines: list[str], indent: str) -> list[str]:
    """Statements laid out as ruff format would (kconv.emit.pyformat); a split statement must parse to
    the same syntax tree as the line it came from, else the line is kept whole."""
    out = []
    for line in lines:
        stripped = line.lstrip(" ")
        lead = indent + line[: len(line) - len(stripped)]
        stmt = pyformat.requote(stripped)
        split = pyformat.wrap(stmt, lead)
        if len(split) > 1 and not _same_tree(stmt, "\n".join(s[len(lead):] for s in split)):
            split = [lead + stmt]
        out += split
    return out


def _balanced(expr: str) -> bool:
    """Whether the brackets of ``expr`` pair up without closing below the top level (``a(b)`` of
    ``self.m(a(b))``; not ``x), self.n(y`` of ``self.m(x), self.n(y)``)."""
    depth = 0
    for c in expr:
        depth += c in "([{"
        depth -= c in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _same_tree(a: str, b: str) -> bool:
    import ast

    try:
        return ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return False


def _attr_path(dotted: str) -> str:
    """'a.cells.0.w' -> 'a.cells[0].w' (attribute access to a state-dict key)."""
    out = ""
    for part in dotted.split("."):
        out += f"[{part}]" if part.isdigit() else (("." if out else "") + part)
    return out


def _is_model_input(model, ref):
    return any(r.layer == ref.layer for r in model.inputs)


def _class_name(name: str) -> str:
    ident = identifier(name)
    return "".join(p[:1].upper() + p[1:] for p in ident.split("_") if p) or "Sub"


