"""``kconv verify``: run the Keras model and the converted torch model on the same inputs and compare.

Keras is the reference. tensorflow/keras are imported only inside :mod:`kconv.verify.keras_side`
functions; importing this package imports neither (nor torch).

Typical use::

    from kconv.verify import verify
    result = verify("model.h5", "out/model", per_layer=True)
    result.passed, result.outputs[0].max_abs_err, result.first_divergence
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .. import progress
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, Comparison, compare
from .errors import KerasUnavailableError, MismatchError, VerifyInputError
from .inputs import DEFAULT_BATCH, generate, input_specs, load_inputs, load_reference, parse_dims

SCHEMA_VERSION = 1

__all__ = ["verify", "VerifyResult", "LayerComparison", "Comparison", "compare", "parse_dims",
           "DEFAULT_ATOL", "DEFAULT_RTOL", "SCHEMA_VERSION", "MismatchError", "VerifyInputError",
           "KerasUnavailableError"]


@dataclass
class LayerComparison(Comparison):
    class_name: str = ""
    hint: str = ""  # the layer declaration's notes (kconv.specs), for the first diverging layer

    def to_json(self) -> dict:
        return Comparison.to_json(self)


@dataclass
class VerifyResult:
    model: str
    converted: str
    atol: float
    rtol: float
    input_source: str  # 'generated', 'file', 'given', 'reference'
    inputs: list  # [{'name', 'shape', 'dtype'}]
    outputs: list  # [Comparison]
    seed: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    reference: str = "keras"  # 'keras X.Y (backend)' or the --reference file
    layers: list | None = None  # [LayerComparison] with per_layer
    trace: str = ""  # what the per-layer trace ran: the shipped model.py or regenerated code
    precision: str = "float32"  # 'float32', or on CUDA 'float32, TF32 off' / 'TF32 allowed'
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.outputs) and all(c.passed for c in (self.layers or []))

    @property
    def first_divergence(self) -> LayerComparison | None:
        for c in self.layers or []:
            if not c.passed:
                return c
        return None

    def summary(self) -> str:
        """One paragraph: per-output errors and the first diverging layer (used by assert_equivalent)."""
        lines = [f"{self.model} vs {self.converted}: " + ("outputs agree" if self.passed else "MISMATCH")
                 + f" (atol {self.atol:g}, rtol {self.rtol:g}; inputs {self.input_source})"]
        for c in self.outputs:
            lines.append(f"  output {c.name} {tuple(c.shape)}: max abs err {c.max_abs_err:.3g}, max rel err "
                         f"{c.max_rel_err:.3g} -> {'ok' if c.passed else 'DIFFERS'}"
                         + (f" ({c.problem})" if c.problem else ""))
        d = self.first_divergence
        if d is not None:
            lines.append(f"  first diverging layer: {d.name} ({d.class_name}): max abs err {d.max_abs_err:.3g}, "
                         f"max rel err {d.max_rel_err:.3g}" + (f" ({d.problem})" if d.problem else ""))
            if d.hint:
                lines.append(f"    hint: {d.hint}")
        elif self.layers is not None and not self.passed:
            lines.append("  every traced layer agrees")
        return "\n".join(lines)

    def to_json(self) -> dict:
        d = self.first_divergence
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "converted": self.converted,
            "passed": self.passed,
            "atol": self.atol,
            "rtol": self.rtol,
            "device": self.device,
            "precision": self.precision,
            "reference": self.reference,
            "input_source": self.input_source,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "inputs": self.inputs,
            "outputs": [c.to_json() for c in self.outputs],
            "layers": None if self.layers is None else [c.to_json() for c in self.layers],
            "first_divergence": None if d is None else d.to_json(),
            "trace": self.trace or None,
            "notes": self.notes,
        }


def _layer_class(ir_model, key: str) -> str:
    parts = key.split("[", 1)[0].split("/")
    m = ir_model
    cls = ""
    for i, name in enumerate(parts):
        try:
            layer = m.layer(name)
        except KeyError:
            return ""
        cls = layer.class_name
        if i < len(parts) - 1:
            if layer.model is None:
                return ""
            m = layer.model
    return cls


def _hint(class_name: str) -> str:
    from .. import specs

    spec = specs.get(class_name)
    if spec is None:
        return ""
    return "; ".join(spec.notes)


RANDOM_IN_TRAINING = {"Dropout": "rate", "SpatialDropout1D": "rate", "SpatialDropout2D": "rate",
                      "SpatialDropout3D": "rate", "GaussianDropout": "rate", "GaussianNoise": "stddev",
                      "AlphaDropout": "rate"}


def _random_layers(ir) -> list:
    """Layers that draw random numbers in training mode (their outputs cannot be compared)."""
    out = []
    for path, layer in ir.walk():
        key = RANDOM_IN_TRAINING.get(layer.class_name)
        cfg = layer.config
        if key and float(cfg.get(key) or 0) > 0:
            out.append(path)
        for sub in (cfg, *(cfg.get(k, {}).get("config", {}) for k in ("layer", "backward_layer")
                           if isinstance(cfg.get(k), dict))):
            if float(sub.get("dropout") or 0) > 0 or float(sub.get("recurrent_dropout") or 0) > 0:
                out.append(path)
                break
    return out


def _compare_statistics(keras_stats: dict, net, converted, atol, rtol) -> list:
    """Keras moving_mean/moving_variance after the training step vs the torch running statistics."""
    if not isinstance(converted, (str, os.PathLike)):
        return []  # no manifest to map Keras weights to torch keys
    from . import torch_side

    rows = torch_side.manifest(converted).get("weights", [])
    state = net.state_dict()
    out = []
    for row in rows:
        key = (row.get("keras_layer"), row.get("role"))
        if key in keras_stats and row.get("torch_key") in state:
            got = state[row["torch_key"]].detach().cpu().numpy().reshape(keras_stats[key].shape)
            out.append(compare(f"{key[0]}.{key[1]} (updated)", keras_stats[key], got, atol, rtol))
    return out


def _check_source(model, converted, man: dict):
    """The manifest records the sha256 of the file it was converted from: a directory converted from
    another model would give a meaningless comparison (or a confusing crash)."""
    from ..emit import _sha256

    recorded = man.get("source_sha256")
    actual = _sha256(Path(model))
    if recorded and actual and recorded != actual:
        raise VerifyInputError(
            f"{converted} was converted from {man.get('source')!r} (sha256 {recorded[:12]}...), not from {model} "
            f"(sha256 {actual[:12]}...); pass the directory converted from this file, or convert it again")


#: Learning rate of the one SGD step of --mode train (both sides).
SGD_LR = 0.01


def coefficients(index: int, shape: tuple):
    """The --mode train loss is sum_i sum(output_i * coefficients(i, shape_i)): fixed, seeded, in
    [-1, 1], so that no gradient vanishes by symmetry (a plain sum after a softmax has zero gradient)."""
    import numpy as np

    return np.random.default_rng(1000 + index).uniform(-1.0, 1.0, size=shape).astype(np.float32)


def _leaves(model, keras_path=(), torch_prefix=""):
    from ..naming import module_names

    names = module_names([ly.name for ly in model.layers])
    for ly in model.layers:
        if ly.class_name == "InputLayer":
            continue
        if ly.model is not None:
            yield from _leaves(ly.model, keras_path + (ly.name,), torch_prefix + names[ly.name] + ".")
        else:
            yield keras_path + (ly.name,), torch_prefix + names[ly.name] + ".", ly


def _compare_training(ir, k_grads, k_after, t_grads, t_after, atol, rtol, notes) -> list:
    """Gradients of the loss w.r.t. every Keras trainable weight vs the torch parameters' (through the
    same transform the converter applies to the weight), and every converted tensor after the SGD step."""
    from .. import specs

    out, skipped = [], []
    for path, prefix, layer in _leaves(ir):
        pairs = [(i, w, d) for i, (w, d) in enumerate(specs.declared_weights(layer))]
        if not pairs:
            continue
        if layer.config.get("lora_rank") or any((path, i) in k_after and tuple(k_after[(path, i)].shape)
                                                 != tuple(w.shape) for i, w, _ in pairs) \
                or any((path, i) not in k_after for i, _, _ in pairs):
            skipped.append("/".join(path))
            continue
        label = "/".join(path)
        for i, w, d in pairs:
            if d is None:
                continue
            for name, t in d.targets(layer.config):
                key = prefix + name
                if (path, i) in k_grads and not _is_zeros(t):
                    if key in t_grads:
                        out.append(compare(f"grad {label}.{w.key} -> {key}", t.apply(k_grads[(path, i)]),
                                           t_grads[key], atol, rtol))
                    else:
                        out.append(Comparison(f"grad {label}.{w.key} -> {key}", list(w.shape), float("inf"),
                                              float("inf"), float("inf"), False,
                                              "trainable in Keras, no gradient in torch (frozen?)"))
                elif key in t_grads and not _is_zeros(t):
                    out.append(Comparison(f"grad {label}.{w.key} -> {key}", list(w.shape), float("inf"),
                                          float("inf"), float("inf"), False,
                                          "not trainable in Keras, trained in torch"))
                if key in t_after:
                    out.append(compare(f"{label}.{w.key} -> {key} after SGD step", t.apply(k_after[(path, i)]),
                                       t_after[key], atol, rtol))
    if skipped:
        notes.append("gradients not compared for: " + ", ".join(skipped) + " (LoRA, or Keras's weights do not "
                     "pair with kconv's)")
    return out


def _is_zeros(t) -> bool:
    from ..transforms import Zeros

    return isinstance(t, Zeros)


def _ir_of_keras_model(keras_model, workdir: Path):
    """kconv's IR of a live Keras model: saved to a temporary .keras file, then read back by kconv.load."""
    from ..load import load

    path = workdir / "model.keras"
    keras_model.save(str(path))
    return load(path)


def verify(model=None, converted=None, *, inputs=None, inputs_file=None, reference=None, seed: int = 0,
           batch_size: int = DEFAULT_BATCH, dims=None, atol: float | None = None, rtol: float | None = None,
           per_layer: bool = False, device: str = "cpu", config=None, mode: str = "eval",
           by_name: bool = False, allow_tf32: bool = False) -> VerifyResult:
    """Compare a Keras model with its conversion.

    ``model``: a model file path or a live ``keras.Model``. ``converted``: a ``kconv convert`` output
    directory, or a loaded ``torch.nn.Module`` (then it takes Keras-layout inputs). Inputs, in order
    of precedence: ``reference`` (npz with input_*/output_*: Keras is not run), ``inputs`` (a list of
    arrays or a dict by input name), ``inputs_file`` (npz), else generated from the model's input
    specs with ``seed``, ``batch_size`` and ``dims`` ({(input name or None, axis): size}, see
    :func:`kconv.verify.inputs.parse_dims`).

    ``mode='train'``: one call of each model in training mode (Keras ``training=True``, torch
    ``.train()``) on the same batch: compares the outputs (BatchNormalization with batch statistics)
    and every BatchNormalization's updated moving mean and variance; then one SGD step: the gradient of
    a fixed loss (see ``coefficients``) w.r.t. every trainable weight and every weight after the step.
    Only for deterministic models (no active dropout or noise layer).

    The torch side runs in full float32: TF32 off for CUDA matmuls and cuDNN convolutions (torch lets
    cuDNN use TF32 by default), unless ``allow_tf32``; then ``atol``/``rtol`` default to 5e-3 (else 1e-4).
    An exception raised by the torch model is a failed comparison naming the layer, not a crash.
    """
    from .. import load as kload
    from . import keras_side, torch_side

    if atol is None:
        atol = torch_side.TF32_ATOL if allow_tf32 else DEFAULT_ATOL
    if rtol is None:
        rtol = torch_side.TF32_RTOL if allow_tf32 else DEFAULT_RTOL
    prec = torch_side.precision(device, allow_tf32)
    if atol < 0 or rtol < 0:
        raise VerifyInputError("--atol and --rtol must be >= 0")
    if reference is not None and per_layer:
        raise VerifyInputError("--per-layer runs Keras layer by layer: it cannot be combined with --reference")
    if mode not in ("eval", "train"):
        raise VerifyInputError(f"--mode must be eval or train, not {mode!r}")
    training = mode == "train"
    if training and (reference is not None or per_layer):
        raise VerifyInputError("--mode train runs Keras once in training mode: not with --reference or --per-layer")
    torch_side.check_device(device)
    notes: list = []
    with tempfile.TemporaryDirectory(prefix="kconv-verify-") as tmp:
        keras_model = None
        if model is None:
            raise VerifyInputError("verify needs the Keras model (a file path or a keras.Model)")
        if isinstance(model, (str, os.PathLike)):
            ir = kload(model, config=config, by_name=by_name)
            model_label = str(model)
        else:
            keras_model = model
            ir = _ir_of_keras_model(keras_model, Path(tmp))
            model_label = f"keras.Model {getattr(model, 'name', '')!r}"

        shipped_source = None
        # the model as the file has it (layer classes); folded BatchNorms; ZeroPaddings made symmetric
        ir_shown, folded, repadded = ir, {}, {}
        if isinstance(converted, (str, os.PathLike)):
            from ..emit import load_converted

            man = torch_side.manifest(converted)
            if isinstance(model, (str, os.PathLike)):
                _check_source(model, converted, man)
            channels_first = bool(man.get("channels_first", False))
            blocks = bool(man.get("blocks", False))
            if man.get("optimized") is not None:  # convert --optimize: kconv's side is the rewritten model
                from ..optimize import Plan, optimize

                if training:
                    raise VerifyInputError(f"{converted} was converted with --optimize (BatchNormalization folded, "
                                           "no train mode): --mode train needs a default conversion")
                ir_shown, (ir, _) = ir, optimize(ir)
                opt_plan = Plan.from_json(man["optimized"])
                folded, repadded = opt_plan.folded, opt_plan.padding_layers()
            net = load_converted(converted, device=device)
            shipped_source = (Path(converted) / "model.py").read_text()
            converted_label = str(converted)
        else:
            net = converted.eval().to(device)
            channels_first = blocks = False
            converted_label = f"torch module {type(converted).__name__}"

        if training:
            random = _random_layers(ir)
            if random:
                raise VerifyInputError("--mode train needs a deterministic model; these layers draw random numbers "
                                       "in training: " + ", ".join(random))
        specs = input_specs(ir)
        output_names = [str(r) for r in ir.outputs]
        expected = None
        if reference is not None:
            xs, expected = load_reference(reference, specs, output_names)
            source, ref_label = "reference", str(reference)
        elif inputs is not None:
            if isinstance(inputs, dict):
                from .inputs import _pick
                inputs = _pick(inputs, "input_", [s.name for s in specs], "inputs", "inputs")
            elif not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            if len(inputs) != len(specs):
                raise VerifyInputError(f"{len(inputs)} input array(s) given; the model has {len(specs)} inputs")
            from .inputs import check_inputs
            xs, source = check_inputs(specs, list(inputs), "inputs"), "given"
        elif inputs_file is not None:
            xs, source = load_inputs(inputs_file, specs), "file"
        else:
            xs, source = generate(specs, seed=seed, batch_size=batch_size, dims=dims), "generated"
        if expected is None:
            if keras_model is None:
                with progress.task(f"loading {Path(str(model)).name} with Keras"):
                    keras_model = keras_side.load_model(model)
            k = keras_side.keras()
            ref_label = f"keras {k.__version__} ({k.backend.backend()})"
            with progress.task("running the Keras reference"):
                if training:
                    expected, k_grads, k_after = keras_side.train_step(keras_model, xs, coefficients, SGD_LR)
                else:
                    expected = keras_side.run(keras_model, xs)

        failed = None
        try:
            with prec:
                if training:
                    got, t_grads, t_after = torch_side.train_step(net, xs, coefficients, SGD_LR, channels_first,
                                                                  device)
                else:
                    got = torch_side.run(net, xs, channels_first=channels_first, device=device)
        except Exception as e:  # the converted model does not run here: a failed verification, not a crash
            failed = _torch_failure(e, device, _var_layers(ir, channels_first))
            notes.append(failed)
            got, training = [], False
        outputs = []
        if len(got) != len(expected) and not failed:
            notes.append(f"torch returns {len(got)} output(s), Keras {len(expected)}")
        for i, name in enumerate(output_names):
            if i >= len(got) or i >= len(expected):
                outputs.append(Comparison(name, [], float("inf"), float("inf"), float("inf"), False,
                                          failed or ("missing on the " + ("torch" if i >= len(got) else "Keras")
                                                     + " side")))
                continue
            outputs.append(compare(name, expected[i], got[i], atol, rtol))
        if training:
            outputs += _compare_statistics(keras_side.batchnorm_statistics(keras_model), net, converted, atol, rtol)
            outputs += _compare_training(ir, k_grads, k_after, t_grads, t_after, atol, rtol, notes)

        layers = None
        trace_how = ""
        if per_layer:
            mod, tnet, trace_how = torch_side.trace_module(ir, net, channels_first=channels_first,
                                                           shipped_source=shipped_source, device=device,
                                                           blocks=blocks)
            trace_failed = None
            try:
                with prec:
                    torch_side.run(tnet, xs, channels_first=channels_first, device=device, trace=mod.TRACE)
            except Exception as e:
                layers_of = _var_layers(ir, channels_first)
                trace_failed = (torch_side.failing_layer(e, layers_of), _torch_failure(e, device, layers_of))
            with progress.task("tracing every Keras layer"):
                k_values = keras_side.layer_outputs(keras_model, xs, notes=notes)
            layers = []
            # --optimize: a layer a BatchNormalization was folded into outputs conv + BN; it is compared
            # at the BatchNormalization's output
            into = {v: k for k, v in folded.items()}
            for key, t in mod.TRACE.items():
                if key not in k_values or key in into or key in repadded:
                    continue
                c = compare(key, k_values[key], t.detach().cpu().numpy(), atol, rtol)
                layers.append(LayerComparison(**vars(c), class_name=_layer_class(ir_shown, key)))
            if into:
                names = [k for k in mod.TRACE if k in into] + sorted(k for k in into if k not in mod.TRACE)
                pairs = ", ".join(f"{k} -> {into[k]}" for k in names[:8]) + (" ..." if len(names) > 8 else "")
                notes.append(f"--optimize folded {len(into)} BatchNormalization(s) into the layer before; that "
                             f"layer is compared at the BatchNormalization's output: {pairs}")
            if repadded:
                pairs = ", ".join(f"{k} -> {v}" for k, v in list(repadded.items())[:8]) + (
                    " ..." if len(repadded) > 8 else "")
                notes.append(f"--optimize made {len(repadded)} ZeroPadding(s) symmetric (the convolution after "
                             f"each has a longer kernel with zero taps): not compared, the convolution is: {pairs}")
            missing = [key for key in k_values if key not in mod.TRACE and key not in into and key not in repadded]
            if trace_failed is not None:
                where, why = trace_failed
                name = where.split(" (")[0] if where else (missing[0] if missing else "?")
                layers.append(LayerComparison(name, [], float("inf"), float("inf"), float("inf"), False, why,
                                              class_name=_layer_class(ir_shown, name)))
                missing = [key for key in missing if key != name]
            if missing:
                notes.append("no torch trace for: " + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
            for c in layers:
                if not c.passed:
                    c.hint = _hint(c.class_name)
                    break

    inputs_info = [{"name": s.name, "shape": list(x.shape), "dtype": str(x.dtype)} for s, x in zip(specs, xs)]
    return VerifyResult(model=model_label, converted=converted_label, atol=atol, rtol=rtol, input_source=source,
                        inputs=inputs_info, outputs=outputs, seed=seed if source == "generated" else None,
                        batch_size=batch_size if source == "generated" else None, device=device,
                        reference=ref_label, layers=layers, trace=trace_how, notes=notes, precision=prec.label)


def _var_layers(ir, channels_first: bool) -> dict:
    """{forward variable: (Keras layer, class)} of the code kconv generates for ``ir`` ({} if none)."""
    from ..emit.codegen import Generator

    gen = Generator(ir, channels_first_io=channels_first)
    try:
        gen.generate()
    except Exception:  # naming the layer is a courtesy: never a second failure
        return {}
    return gen.var_layers


def _torch_failure(exc: BaseException, device: str, var_layers: dict | None = None) -> str:
    from . import torch_side

    where = torch_side.failing_layer(exc, var_layers)
    msg = " ".join(str(exc).split())[:300]
    return (f"the converted model raised {type(exc).__name__} on {device}" + (f" in layer {where}" if where else "")
            + f": {msg}")
