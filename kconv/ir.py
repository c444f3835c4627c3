"""The model description: a framework-neutral IR of a Keras model.

No torch, no tensorflow. Weight data is read lazily: ``Weight.read()`` touches the file,
everything else (names, roles, shapes, dtypes) is known after ``kconv.load``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

Shape = tuple  # a tuple of int | None; None is an unknown dimension (the batch, a free length)


@dataclass
class Weight:
    """One stored tensor of a layer."""

    name: str  # where the file keeps it: 'conv2d/kernel:0', 'sequential/dense/bias', 'layers/dense/vars/0'
    key: str  # the Keras attribute it belongs to: 'kernel', 'moving_variance', ...
    role: str  # what it is (see kconv.specs.roles): usually equal to ``key``
    shape: tuple
    dtype: str
    trainable: bool
    reader: Optional[Callable[[], Any]] = field(default=None, repr=False, compare=False)
    note: str = ""  # e.g. "LoRA factor, not stored: merged into kernel by Keras on save"
    # The shape in the file when Keras converts the weight on load (CuDNN RNN weights under an LSTM):
    # ``shape`` is then the converted one, as the loaded Keras model holds it; None otherwise.
    stored_shape: Optional[tuple] = None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    def read(self):
        """The weight as a numpy array (reads the file)."""
        if self.reader is None:
            raise ValueError(f"weight {self.name!r} has no stored data")
        return self.reader()


@dataclass(frozen=True)
class TensorRef:
    """Output ``index`` of call ``node`` of layer ``layer`` (Keras's ``keras_history``)."""

    layer: str
    node: int
    index: int

    def __str__(self) -> str:
        return self.layer if (self.node, self.index) == (0, 0) else f"{self.layer}[{self.node}][{self.index}]"


@dataclass
class Call:
    """One call of a layer: its tensor inputs (flattened, in order) and non-tensor keyword args.

    ``input_is_list`` says the layer got a list (Add, Concatenate) rather than one tensor.
    ``tensor_kwargs`` are tensors passed by keyword (``mask=``, ``initial_state=``, attention ``value=``).
    ``tensor_args``: how many positional arguments hold tensors (a list counts once), for a Keras 3
    node; None for a Keras 1/2 node, whose inputs are one flat list.
    """

    inputs: list[TensorRef]
    input_is_list: bool = False
    kwargs: dict = field(default_factory=dict)
    tensor_kwargs: dict = field(default_factory=dict)  # name -> TensorRef | list[TensorRef]
    tensor_args: int | None = None
    output_shapes: list = field(default_factory=list)  # filled by shape inference


@dataclass
class Layer:
    """One layer of a model: its class, normalised config, stored weights and calls in the graph."""

    name: str
    class_name: str
    config: dict  # normalised config (see kconv.load.config)
    weights: list[Weight] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # Set when this layer is itself a model (nesting), or wraps one: TimeDistributed(Sequential) keeps
    # the wrapped model here (``wraps_model``); its call then runs the model on every time step.
    model: Optional["Model"] = None
    trainable: bool = True
    notes: list[str] = field(default_factory=list)  # e.g. dialect normalisations applied
    # The file's layer group the weights came from, when paired by order (weights-only HDF5 read with an
    # architecture whose names may differ, as Keras's load_weights does); None otherwise.
    stored_as: Optional[str] = None

    @property
    def is_model(self) -> bool:
        return self.model is not None and not self.wraps_model

    @property
    def wraps_model(self) -> bool:
        """A wrapper layer (TimeDistributed) around a whole model, kept in ``model``."""
        return self.model is not None and self.class_name == "TimeDistributed"

    def param_counts(self) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts, nested models included."""
        if self.model is not None:
            return self.model.param_counts()
        t = sum(w.size for w in self.weights if w.trainable)
        n = sum(w.size for w in self.weights if not w.trainable)
        return t, n


@dataclass
class Model:
    """A Keras model read from a file: its layers in graph order, inputs, outputs and where it came from."""

    name: str
    class_name: str  # 'Sequential' or 'Functional'
    layers: list[Layer]  # graph (config) order
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    # Set on the top-level model only:
    source: str = ""
    format: str = ""  # 'keras' (Keras 3 zip), 'h5'
    keras_version: str = ""
    backend: str = ""
    backend_note: str = ""  # how the writer's backend was decided when the file does not say (Keras 1)
    # layers whose conversion depends on a *guessed* writer backend (Keras 1, no --backend-of-writer):
    # convert refuses them rather than risk Theano/TensorFlow kernels being read the wrong way
    backend_guess_affects: list = field(default_factory=list)
    # Optimizer state the file also carries (a compiled, trained model): not model parameters, not
    # counted (Keras's count_params does not either), not converted. None when there is none.
    optimizer_state: Optional[dict] = None  # {"where", "variables", "values"}

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layers_by_name(self) -> dict:
        """name -> layer, the first of a name as :meth:`layer` finds it: for a walk that looks many
        names up (``layer`` scans the list each time)."""
        out: dict = {}
        for layer in self.layers:
            out.setdefault(layer.name, layer)
        return out

    def param_counts(self) -> tuple[int, int]:
        t = n = 0
        for layer in self.layers:
            lt, ln = layer.param_counts()
            t, n = t + lt, n + ln
        return t, n

    @property
    def trainable_params(self) -> int:
        return self.param_counts()[0]

    @property
    def non_trainable_params(self) -> int:
        return self.param_counts()[1]

    @property
    def total_params(self) -> int:
        return sum(self.param_counts())

    def walk(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """Every layer, nested ones included, with its dotted path."""
        for layer in self.layers:
            path = f"{prefix}{layer.name}"
            yield path, layer
            if layer.model is not None:
                yield from layer.model.walk(path + ".")

    def output_shapes(self) -> list:
        return [self.layer(r.layer).calls[r.node].output_shapes[r.index] for r in self.outputs]
