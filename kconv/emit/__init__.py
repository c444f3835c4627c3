"""Convert a loaded model: emit model.py, build the state dict from the declarations, write atomically.

What is saved is checked by importing the emitted source and loading the weights strictly.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import __version__, specs
from ..errors import KconvError, ModelFileError, WeightMismatchError
from ..ir import Layer, Model
from ..naming import module_names
from .codegen import Generator

MANIFEST = "kconv.json"
FORMATS = ("safetensors", "pt")


class OutputError(KconvError):
    pass


def _leaf_paths(model: Model, prefix: str = ""):
    names = module_names([ly.name for ly in model.layers])
    for ly in model.layers:
        path = prefix + names[ly.name]
        if ly.model is not None:
            yield from _leaf_paths(ly.model, path + ".")
        else:
            yield path, ly


def _weight_decl_pairs(layer: Layer):
    return [(w, d) for w, d in specs.declared_weights(layer) if d is not None]


def _lora_merged_kernel(layer: Layer):
    """Keras 3 LoRA: effective kernel = kernel + lora_a @ lora_b * (lora_alpha / lora_rank)."""
    ws = {w.key: w for w in layer.weights}
    kernel = ws["kernel"].read()
    a, b = ws.get("lora_kernel_a"), ws.get("lora_kernel_b")
    if a is None or b is None or a.reader is None or b.reader is None:
        return kernel  # .keras files store the merged kernel
    rank = float(layer.config["lora_rank"])
    alpha = float(layer.config.get("lora_alpha") or rank)
    return (kernel + a.read() @ b.read() * (alpha / rank)).astype(kernel.dtype)


def tensors_for(model: Model):
    """{torch key: numpy array} and the manifest rows, from the layer declarations."""
    out, rows = {}, []
    for path, layer in _leaf_paths(model):
        for w, d in _weight_decl_pairs(layer):
            targets = d.targets(layer.config)
            if not targets:
                rows.append({"keras_layer": layer.name, "keras_weight": w.name, "role": w.role,
                             "keras_shape": list(w.shape), "torch_key": None, "note": d.why_no_torch})
                continue
            data = _lora_merged_kernel(layer) if (w.key == "kernel" and layer.config.get("lora_rank")) else w.read()
            data = np.asarray(data)
            if data.shape != tuple(w.shape):
                raise WeightMismatchError([f"layer {layer.name!r}: {w.name} read as {data.shape}, expected {w.shape}"])
            for name, t in targets:
                key = f"{path}.{name}"
                out[key] = t.apply(data)
                rows.append({"keras_layer": layer.name, "keras_weight": w.name, "role": w.role,
                             "keras_shape": list(w.shape), "torch_key": key, "torch_shape": list(out[key].shape),
                             "transform": t.describe()})
    return out, rows


def _import(path: Path):
    name = "kconv_emitted_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        return ""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_state(model: Model, net, arrays: dict, defaults: set):
    import torch

    sd = net.state_dict()
    missing = [k for k in sd if k not in arrays and k not in defaults]
    unexpected = [k for k in arrays if k not in sd]
    problems = [f"torch key {k!r} has no Keras weight" for k in missing]
    problems += [f"Keras weight for {k!r} has no place in the emitted module" for k in unexpected]
    state = {}
    for k, v in sd.items():
        if k in arrays:
            a = arrays[k]
            if tuple(a.shape) != tuple(v.shape):
                problems.append(f"{k}: Keras weight gives shape {tuple(a.shape)}, the module expects {tuple(v.shape)}")
                continue
            state[k] = torch.from_numpy(np.ascontiguousarray(a)).to(v.dtype)
        else:
            state[k] = v.detach().clone()
    if problems:
        raise WeightMismatchError(problems)
    return state


def convert(model: Model, out_dir, fmt: str = "safetensors", channels_first: bool = False,
            observer=None) -> Path:
    """Write ``out_dir/model.py``, the weights and the manifest; nothing is left behind on failure."""
    import torch

    if fmt not in FORMATS:
        raise OutputError(f"unknown weights format {fmt!r} (choose from {', '.join(FORMATS)})")
    out_dir = Path(out_dir)
    gen = Generator(model, channels_first_io=channels_first)
    source = gen.generate()
    arrays, rows = tensors_for(model)
    parent = out_dir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    _check_target(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.kconv-", dir=parent))
    try:
        (tmp / "model.py").write_text(source)
        mod = _import(tmp / "model.py")
        net = mod.Model()
        state = build_state(model, net, arrays, gen.defaults)
        net.load_state_dict(state, strict=True)
        wname = "model.safetensors" if fmt == "safetensors" else "model.pt"
        if fmt == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(tmp / wname))
        else:
            torch.save(dict(sorted(state.items())), tmp / wname)
        manifest = {
            "kconv_version": __version__,
            "source": Path(model.source).name,
            "source_sha256": _sha256(Path(model.source)),
            "source_format": model.format,
            "keras_version": model.keras_version,
            "writer_backend": model.backend,
            "writer_backend_note": model.backend_note,
            "weights_file": wname,
            "channels_first": channels_first,
            "inputs": [r.layer for r in model.inputs],
            "outputs": [str(r) for r in model.outputs],
            "weights": rows,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for k in [k for k in sys.modules if k.startswith("kconv_emitted_")]:
            del sys.modules[k]
    return out_dir


def _check_target(out_dir: Path):
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
            raise OutputError(f"{out_dir}: exists, is not empty and is not a kconv output directory; "
                              "choose another -o or remove it")


def _replace(tmp: Path, out_dir: Path):
    """Rename ``tmp`` into place; a previous kconv output there is replaced."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.kconv-old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_converted(out_dir, device: str = "cpu"):
    """Import ``out_dir/model.py`` and load its weights strictly, as a user would; eval mode."""
    import torch

    out_dir = Path(out_dir)
    if not (out_dir / "model.py").exists():
        raise ModelFileError(out_dir, "no model.py: not a kconv output directory")
    try:
        mod = _import(out_dir / "model.py")
        net = mod.Model()
    except Exception as e:  # a hand-edited or damaged model.py is the user's input, not a kconv bug
        raise ModelFileError(out_dir / "model.py", f"cannot be imported or built ({type(e).__name__}: {e})") from e
    if (out_dir / "model.safetensors").exists():
        from safetensors.torch import load_file

        state = load_file(str(out_dir / "model.safetensors"))
    elif (out_dir / "model.pt").exists():
        state = torch.load(out_dir / "model.pt", weights_only=True)
    else:
        raise ModelFileError(out_dir, "no model.safetensors or model.pt")
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)
