"""Extensions: converters for layers kconv does not know (custom Keras classes, ``Lambda`` layers).

An extension is a Python file (or module) the user names with ``--extension`` (or a package ships
under the ``kconv.extensions`` entry-point group). It declares each custom layer class the way kconv
declares its own (:class:`kconv.specs.LayerSpec` fields: its stored weights as
:class:`WeightDecl` in the order build() creates them, with roles, torch names and transforms from
:mod:`kconv.transforms`; its output shape from the config and the input shapes) and gives its PyTorch
implementation::

    from torch import nn
    from kconv.extend import WeightDecl, layer

    class Scale(nn.Module):
        def __init__(self, config):        # the layer's Keras config (name/trainable/dtype removed)
            super().__init__()
            self.scale = nn.Parameter(torch.ones(config["units"]))

        def forward(self, x):
            return x * self.scale

    layer("Scale", torch=Scale, weights=[WeightDecl("scale", torch="scale")],
          output_shape=lambda config, shapes: shapes[0])

A weightless layer may be a function ``fn(*inputs, config)``; a ``Lambda`` layer is mapped by its
layer name or by the function name the file records to a function ``fn(*inputs, **arguments)``
(:func:`lambda_layer`). The source of the module/function (and of what ``needs=`` lists) is copied
into the emitted ``model.py``, which still imports only torch. Extensions are user code, run only
because the user named them; a model file's own code never runs.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import specs
from .errors import KconvError
from .specs import LayerSpec, WeightDecl
from .transforms import IDENTITY, Chain, Flip, Permute, Reshape, Transform

__all__ = ["layer", "lambda_layer", "WeightDecl", "Transform", "IDENTITY", "Permute", "Reshape", "Flip", "Chain",
           "load", "clear", "loaded", "active", "ExtensionError", "ENTRY_POINT_GROUP", "MASK_MODES"]

ENTRY_POINT_GROUP = "kconv.extensions"
#: What a custom layer does with a Keras mask arriving with its input: None (it must not get one: the
#: conversion is refused if it does), "use" (``forward(..., mask=)`` gets it as a (batch, time) bool
#: tensor; the output has no mask, as with a Keras compute_mask returning None), "keep" (the layer
#: ignores it and the output keeps the first input's mask, as Keras's supports_masking=True).
MASK_MODES = (None, "use", "keep")
#: Config keys every Keras layer has: not passed to the torch implementation.
BASE_KEYS = ("name", "trainable", "dtype", "batch_input_shape", "batch_shape", "build_config")


class ExtensionError(KconvError):
    """An extension cannot be loaded or is not a valid declaration (exit 2)."""


@dataclass
class Custom:
    """One extension declaration: a custom layer class, or a Lambda mapping."""

    impl: Callable  # nn.Module subclass or function
    needs: tuple = ()
    mask: Optional[str] = None
    origin: str = ""  # the extension it came from (shown in model.py)
    output_shape: Optional[Callable] = None
    class_names: tuple = ()
    lambda_layers: tuple = ()  # Lambda: layer names
    lambda_functions: tuple = ()  # Lambda: recorded function names
    sources: dict = field(default_factory=dict)  # name -> source to copy

    @property
    def is_module(self) -> bool:
        return inspect.isclass(self.impl)


# --- the active declarations ------------------------------------------------------------------------
_LAYERS: dict[str, Custom] = {}  # class name -> declaration
_LAMBDAS: list[Custom] = []
_LAMBDA_SPEC_SAVED: Optional[tuple] = None
_ORIGIN: list[str] = []  # the extension being loaded


def layer(*class_names: str, torch, weights=(), output_shape=None, mask: Optional[str] = None, summary: str = "",
          needs: Sequence = (), notes: tuple = (), keras_subobjects: tuple = ()) -> LayerSpec:
    """Declare custom Keras layer class(es) ``class_names`` (as the file names them) and their torch
    implementation ``torch``: an ``nn.Module`` subclass built as ``cls(config)`` (plus
    ``input_shape=`` the first input's Keras shape, or ``input_shapes=`` all of them, when its
    ``__init__`` has that parameter: e.g. for the size of a weight built from the input), or, for a weightless
    layer, a function called as ``fn(*inputs, config)``. ``weights``: :class:`WeightDecl` in the order build()
    creates them (kconv pairs them with the file in Keras's storage order: trainable ones first); the ``torch``
    name is the module's parameter or buffer. ``output_shape(config,
    input_shapes)``: the Keras output shape (batch axis included; None for unknown sizes) or a list
    of shapes. ``mask``: see :data:`MASK_MODES`. ``needs``: module-level functions, classes or other
    objects the implementation uses, copied with it."""
    if not class_names or not all(isinstance(n, str) and n for n in class_names):
        raise ExtensionError("layer(): give the Keras class name(s) as the file records them")
    if mask not in MASK_MODES:
        raise ExtensionError(f"layer({class_names[0]!r}): mask must be one of {MASK_MODES}, not {mask!r}")
    if not callable(torch):
        raise ExtensionError(f"layer({class_names[0]!r}): torch= must be an nn.Module subclass or a function")
    weights = tuple(weights)
    if weights and not inspect.isclass(torch):
        raise ExtensionError(f"layer({class_names[0]!r}): a layer with weights needs an nn.Module class, "
                             "not a function")
    for w in weights:
        if not isinstance(w, WeightDecl):
            raise ExtensionError(f"layer({class_names[0]!r}): weights must be WeightDecl objects, not {w!r}")
    builtin = [n for n in class_names if n in specs.registry() and n not in _LAYERS]
    if builtin:
        raise ExtensionError(f"{', '.join(builtin)}: kconv declares this class itself; an extension cannot "
                             "replace it")
    twice = [n for n in class_names if n in _LAYERS]
    if twice:
        raise ExtensionError(f"{', '.join(twice)}: declared by two extensions ({_LAYERS[twice[0]].origin} "
                             f"and {_origin()})")
    ext = Custom(impl=torch, needs=tuple(needs), mask=mask, origin=_origin(), output_shape=output_shape,
                 class_names=tuple(class_names))
    ext.sources = _sources(ext, class_names[0])
    spec = LayerSpec(class_names=tuple(class_names), family="extension",
                     summary=summary or f"custom layer, converted by the extension {ext.origin}",
                     weights=lambda cfg: storage_order(weights, cfg), output_shape=output_shape,
                     keras_subobjects=tuple(keras_subobjects),
                     no_weights_reason="" if weights else "declared weightless by its extension",
                     emit=lambda e: _emit_custom(e, ext), notes=tuple(notes),
                     uses_mask=mask == "use", output_mask="keep" if mask == "keep" else "")
    specs.register(spec)
    for n in class_names:
        _LAYERS[n] = ext
    return spec


def lambda_layer(fn: Callable, *, layer: Sequence[str] | str = (), function: Sequence[str] | str = (),
                 output_shape=None, mask: Optional[str] = None, needs: Sequence = ()) -> Custom:
    """Map ``Lambda`` layers to the torch function ``fn(*inputs, **arguments)`` (``arguments``: the
    Lambda's own). Which ones: by ``layer`` name(s), or by ``function`` name(s) the file records
    (a registered name like ``'my_package>squash'`` also matches ``'squash'``). A Python ``lambda``
    is stored as bytecode without a usable name: map it by layer name. ``output_shape(config,
    input_shapes)``: when the file does not record it."""
    layers = (layer,) if isinstance(layer, str) else tuple(layer)
    functions = (function,) if isinstance(function, str) else tuple(function)
    if not layers and not functions:
        raise ExtensionError("lambda_layer(): give layer= (Lambda layer names) or function= (recorded function names)")
    if not callable(fn) or inspect.isclass(fn):
        raise ExtensionError("lambda_layer(): fn must be a function taking the Lambda's inputs")
    if mask not in MASK_MODES:
        raise ExtensionError(f"lambda_layer(): mask must be one of {MASK_MODES}, not {mask!r}")
    ext = Custom(impl=fn, needs=tuple(needs), mask=mask, origin=_origin(), output_shape=output_shape,
                 lambda_layers=layers, lambda_functions=functions)
    ext.sources = _sources(ext, (layers or functions)[0])
    _hook_lambda()
    _LAMBDAS.append(ext)
    return ext


def storage_order(decls, cfg) -> list:
    """Declarations in build() order -> the order Keras stores a custom layer's variables in: the
    trainable ones, then the others (keras/src/layers/layer.py save_own_variables: ``_trainable_variables
    + _non_trainable_variables``; tf-keras 2's HDF5 writer the same)."""
    return [d for d in decls if d.trainable_for(cfg)] + [d for d in decls if not d.trainable_for(cfg)]


def _origin() -> str:
    return _ORIGIN[-1] if _ORIGIN else "(Python API)"


# --- copying the implementation's source ------------------------------------------------------------
def _sources(ext: Custom, what: str) -> dict:
    """{name: source} of the implementation and its needs, checked to use nothing else but torch,
    F, nn, builtins and each other (model.py imports only torch): kconv.codecopy, as for kconv's
    own runtime classes."""
    from . import codecopy  # here: most commands declare no extension (kconv inspect's start-up)

    try:
        defs = {}
        for obj in (*ext.needs, ext.impl):
            d = codecopy.of_object(obj)
            defs[d.name] = d
        codecopy.check_imports(defs.values())
        codecopy.closure(defs, defs)
    except codecopy.CopyError as e:
        hint = (" (it imports only torch as torch, torch.nn.functional as F and nn): list module-level helpers in "
                "needs=, or use torch's own") if "would not define" in str(e) else ""
        raise ExtensionError(f"{what}: {e}{hint}") from None
    return {name: d.source + "\n" for name, d in defs.items()}


def _add_sources(e, ext: Custom):
    for name, src in ext.sources.items():
        e.source(name, f"# {name}: copied from the kconv extension {ext.origin}\n{src.rstrip()}\n\n")


# --- emission -------------------------------------------------------------------------------------
def literal(value, where: str = "config") -> str:
    """A config value (JSON data from the file) as Python source; anything else is refused."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"float({str(value)!r})"
        return repr(float(value))
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(literal(v, where) for v in value)
        return f"[{inner}]"
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: non-string key")
        return "{" + ", ".join(f"{ascii(k)}: {literal(v, where)}" for k, v in value.items()) + "}"
    raise ValueError(f"{where}: {type(value).__name__} value")


def layer_config(cfg: dict) -> dict:
    """The config a torch implementation gets: the layer's own keys (Keras base keys removed)."""
    return {k: v for k, v in cfg.items() if k not in BASE_KEYS}


def _emit_custom(e, ext: Custom):
    _add_sources(e, ext)
    args = [e.input(i, "keras") for i in range(e.n_inputs)]
    cfg = literal(layer_config(e.cfg))
    name = ext.impl.__name__
    call_kw = _mask_kw(e, ext)
    if ext.is_module:
        params = inspect.signature(ext.impl.__init__).parameters
        extra = ""
        if "input_shape" in params:
            extra = f", input_shape={literal(_shape(e.in_shapes[0]) if e.in_shapes else None)}"
        elif "input_shapes" in params:
            extra = f", input_shapes={literal([_shape(s) for s in e.in_shapes])}"
        m = e.module(f"{name}({cfg}{extra})")
        call = f"{m}({', '.join(args + call_kw)})"
    else:
        call = f"{name}({', '.join(args + [cfg] + call_kw)})"
    _outputs(e, ext, call)


def _shape(s):
    return None if s is None else [None if d is None else int(d) for d in s]


def _mask_kw(e, ext: Custom) -> list:
    if ext.mask == "use":
        m = e.mask(0)
        return [f"mask={m}"] if m is not None else []
    if ext.mask is None and e.has_mask():
        e.unsupported(f"a Keras mask reaches it: declare mask='use' or mask='keep' in {ext.origin}")
    return []


def _outputs(e, ext: Custom, call: str):
    keep = e.mask(0) if ext.mask == "keep" and e.has_mask() else None
    n = len(e.out_shapes)
    if n <= 1:
        e.output(call, mask=keep)
        return
    tmp = e.temp("outs")
    e.line(f"{tmp} = {call}")
    for i in range(n):
        e.output(f"{tmp}[{i}]", index=i, mask=keep if i == 0 else None)


# --- Lambda -----------------------------------------------------------------------------------------
def lambda_function_name(cfg: dict) -> Optional[str]:
    """The function name a Lambda config records (None for bytecode: a Python lambda)."""
    fn = cfg.get("function")
    if isinstance(fn, dict) and fn.get("class_name") != "__lambda__":
        name = fn.get("config") if isinstance(fn.get("config"), str) else fn.get("registered_name")
        return str(name) if name else None
    if isinstance(fn, str) and cfg.get("function_type") == "function":
        return fn
    return None


def lambda_for(cfg: dict) -> Optional[Custom]:
    name = cfg.get("name")
    fn = lambda_function_name(cfg)
    short = fn.split(">")[-1] if fn else None
    for ext in _LAMBDAS:
        if name in ext.lambda_layers or (fn is not None and (fn in ext.lambda_functions
                                                           or short in ext.lambda_functions)):
            return ext
    return None


def _hook_lambda():
    """Give kconv's own Lambda declaration a converter (and a shape rule) reading the mappings."""
    global _LAMBDA_SPEC_SAVED
    spec = specs.get("Lambda")
    if _LAMBDA_SPEC_SAVED is None:
        _LAMBDA_SPEC_SAVED = (spec.emit, spec.output_shape)
        builtin_shape = spec.output_shape

        def shape(cfg, shapes):
            ext = lambda_for(cfg)
            if ext is not None and ext.output_shape is not None:
                return ext.output_shape(cfg, shapes)
            return builtin_shape(cfg, shapes) if builtin_shape else None

        spec.emit = _emit_lambda
        spec.output_shape = shape


def _emit_lambda(e):
    ext = lambda_for(e.cfg)
    if ext is None:
        fn = lambda_function_name(e.cfg)
        e.unsupported(f"no extension maps this Lambda ({'function ' + repr(fn) if fn else 'Python lambda'}); "
                      "`kconv scaffold MODEL -o FILE.py` writes one to fill in")
    _add_sources(e, ext)
    args = [e.input(i, "keras") for i in range(e.n_inputs)]
    arguments = e.cfg.get("arguments") or {}
    if not isinstance(arguments, dict) or not all(isinstance(k, str) and k.isidentifier() for k in arguments):
        e.unsupported(f"Lambda arguments {arguments!r} are not keyword arguments")
    kwargs = [f"{k}={literal(v)}" for k, v in arguments.items()]
    if ext.mask == "use":
        e.mask_read = True
    call = f"{ext.impl.__name__}({', '.join(args + kwargs + _mask_kw(e, ext))})"
    _outputs(e, ext, call)


# --- loading ----------------------------------------------------------------------------------------
def load(*names: str) -> None:
    """Run extensions: a ``.py`` file path or an importable module name each."""
    for name in names:
        _load_one(str(name))


def _load_one(name: str):
    path = Path(name)
    _ORIGIN.append(path.name if name.endswith(".py") or path.is_file() else name)
    try:
        if name.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ExtensionError(f"extension {name}: no such file")
            import hashlib

            modname = "kconv_extension_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod  # inspect.getsource finds the classes through it
            try:
                spec.loader.exec_module(mod)
            except KconvError:
                raise
            except Exception as e:
                raise ExtensionError(f"extension {name} failed to load: {type(e).__name__}: {e}") from None
        else:
            try:
                if name in sys.modules:
                    importlib.reload(sys.modules[name])
                else:
                    importlib.import_module(name)
            except KconvError:
                raise
            except Exception as e:
                raise ExtensionError(f"extension {name} failed to load: {type(e).__name__}: {e}") from None
    finally:
        _ORIGIN.pop()


def _entry_points_possible() -> bool:
    """Whether any installed distribution can declare a kconv.extensions entry point: its
    ``entry_points.txt`` names the group. A cheap scan of the ``*.dist-info`` / ``*.egg-info``
    folders on ``sys.path`` that spares importing importlib.metadata (email, zipfile, csv...: a
    quarter of ``kconv inspect``'s start-up) when none does; any other kind of path entry (a zip,
    an unreadable folder) is left to importlib.metadata."""
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names = [d.name for d in it if d.name.endswith((".dist-info", ".egg-info"))]
        except NotADirectoryError:
            return True
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), "rb") as f:
                    if ENTRY_POINT_GROUP.encode() in f.read():
                        return True
            except FileNotFoundError:
                continue
            except OSError:
                return True
    return False


def _load_entry_points():
    if not _entry_points_possible():
        return
    from importlib import metadata

    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        eps = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    for ep in eps:
        _ORIGIN.append(f"{ep.value} (entry point {ep.name})")
        try:
            imported = ep.value.split(":")[0].strip() in sys.modules
            target = ep.load()
            if inspect.ismodule(target):
                if imported:  # declarations run on import: again for this command (clear() forgot them)
                    importlib.reload(target)
            elif callable(target):
                target()
        except KconvError:
            raise
        except Exception as e:
            raise ExtensionError(
                f"extension entry point {ep.name} ({ep.value}) failed: {type(e).__name__}: {e}") from None
        finally:
            _ORIGIN.pop()


def clear() -> None:
    """Forget every extension declaration (kconv's own declarations are untouched)."""
    global _LAMBDA_SPEC_SAVED
    specs.unregister(*_LAYERS)
    _LAYERS.clear()
    _LAMBDAS.clear()
    if _LAMBDA_SPEC_SAVED is not None:
        spec = specs.get("Lambda")
        spec.emit, spec.output_shape = _LAMBDA_SPEC_SAVED
        _LAMBDA_SPEC_SAVED = None


def source_names() -> set:
    """The module-level names the active extensions' code defines in model.py."""
    return {n for x in (*_LAYERS.values(), *_LAMBDAS) for n in x.sources}


def loaded() -> dict:
    """{'layers': [class names], 'lambdas': [layer or function names]} of the active declarations."""
    lambdas = [n for x in _LAMBDAS for n in (*x.lambda_layers, *x.lambda_functions)]
    return {"layers": sorted(_LAYERS), "lambdas": lambdas}


@contextlib.contextmanager
def active(names: Sequence[str] = (), entry_points: bool = True):
    """Extensions ``names`` (and the installed entry points) declared for the duration of a command."""
    clear()
    try:
        if entry_points:
            _load_entry_points()
        load(*names)
        yield
    finally:
        clear()
