"""Convert a loaded model: emit model.py, write the weights from the declarations, atomically.

The weights are transformed with numpy and written one tensor at a time (:mod:`.stwriter`), without
importing torch; the import check (the emitted source imported, ``Model()`` built, its state dict's
keys, shapes and dtypes compared with the weights, as a strict ``load_state_dict`` would) runs in a
helper process meanwhile, or in this process if it has torch already (:mod:`.checker`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .. import __version__, progress, specs
from ..errors import KconvError, ModelFileError, OutputError, WeightMismatchError
from ..ir import Layer, Model
from ..transforms import Zeros
from ..naming import module_names
from . import checker, modcheck, stwriter
from .blocks import torch_key
from .codegen import Generator
from .stwriter import Entry

MANIFEST = "kconv.json"
FORMATS = ("safetensors", "pt")


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


def _lora_merged(layer: Layer, w):
    """Keras 3 LoRA: the effective weight ``w`` (kernel, embeddings) = w + lora_<key>_a @ lora_<key>_b *
    (lora_alpha / lora_rank), a matmul over the last axis of a (conv kernels: (k.., in, rank) @ (rank,
    out)). The factors are absent from .keras files, which store the merged weight."""
    ws = {x.key: x for x in layer.weights}
    value = w.read()
    a, b = ws.get(f"lora_{w.key}_a"), ws.get(f"lora_{w.key}_b")
    if not layer.config.get("lora_rank") or a is None or b is None or a.reader is None or b.reader is None:
        return value
    rank = float(layer.config["lora_rank"])
    alpha = float(layer.config.get("lora_alpha") or rank)
    return (value + np.matmul(a.read(), b.read()) * (alpha / rank)).astype(value.dtype)


def weight_plan(model: Model, defaults: dict | None = None, key_of=None):
    """The weights file's entries (:class:`stwriter.Entry`: torch key, dtype, shape and how to produce
    the tensor) and the manifest rows, from the layer declarations, without reading any tensor.
    ``defaults``: the generator's {torch key: (shape, dtype, fill)} of tensors with no Keras weight;
    ``key_of``: the state-dict key of a flat key (``--blocks`` groups layers into submodules)."""
    entries, rows = [], []
    for path, layer in _leaf_paths(model):
        _layer_entries(path, layer, entries, rows, key_of or (lambda k: k))
    for key, (shape, dtype, fill) in sorted((defaults or {}).items()):
        entries.append(Entry(key, dtype, tuple(shape), lambda s=tuple(shape), d=dtype, f=fill: np.full(s, f, d)))
    return entries, rows


def _planned_dtype(w) -> str:
    """The dtype the torch tensor is expected to have: the stored one; bfloat16 variables (a
    bfloat16 policy's, stored as 2-byte void in HDF5) become float32, exactly. The import check
    confirms it against the module (a different one is converted to, as ``tensor.to(dtype)``)."""
    name = str(w.dtype)
    if name == "bfloat16" or name.endswith("V2"):
        return "float32"
    try:
        return np.dtype(name).name
    except TypeError:
        return "float32"


def _layer_entries(path: str, layer: Layer, entries: list, rows: list, key_of):
    for w, d in _weight_decl_pairs(layer):
        targets = d.targets(layer.config)
        if not targets:
            rows.append({"keras_layer": layer.name, "keras_weight": w.name, "role": w.role,
                         "keras_shape": list(w.shape), "torch_key": None, "note": d.why_no_torch})
            continue
        source = _Source(layer, w, len(targets))
        for name, t in targets:
            key = key_of(f"{path}.{name}")
            shape = t.shape(tuple(w.shape))
            entries.append(Entry(key, _planned_dtype(w), tuple(shape), lambda t=t, src=source: t.lazy(src.take())))
            rows.append({"keras_layer": layer.name, "keras_weight": w.name, "role": w.role,
                         "keras_shape": list(w.shape), "torch_key": key, "torch_shape": list(shape),
                         "transform": t.describe(), "trainable": bool(w.trainable) and not isinstance(t, Zeros)})


class _Source:
    """One Keras weight read once (LoRA factors merged) for its ``uses`` torch tensors, then released."""

    def __init__(self, layer: Layer, w, uses: int):
        self.layer, self.w, self.uses, self.data = layer, w, uses, None

    def take(self):
        data = self.data
        if data is None:
            data = np.asarray(_lora_merged(self.layer, self.w))
            if data.shape != tuple(self.w.shape):
                raise WeightMismatchError([f"layer {self.layer.name!r}: {self.w.name} read as {data.shape}, "
                                           f"expected {self.w.shape}"])
        self.uses -= 1
        self.data = data if self.uses > 0 else None
        return data


def check_state(spec: dict, entries: list) -> list:
    """The import check: the entries against ``Model().state_dict()``'s {key: (shape, dtype)}, as a
    strict ``load_state_dict`` checks them (every key, no other, same shapes). Returns the entries
    with the module's dtypes."""
    planned = {e.key: e for e in entries}
    problems = [f"torch key {k!r} has no Keras weight" for k in spec if k not in planned]
    problems += [f"Keras weight for {k!r} has no place in the emitted module" for k in planned if k not in spec]
    out = []
    for k, (shape, dtype) in spec.items():
        e = planned.get(k)
        if e is None:
            continue
        if tuple(e.shape) != tuple(shape):
            problems.append(f"{k}: Keras weight gives shape {tuple(e.shape)}, the module expects {tuple(shape)}")
        out.append(e if e.dtype == dtype else Entry(e.key, dtype, e.shape, e.produce))
    if problems:
        raise WeightMismatchError(problems)
    return out


def _import(path: Path):
    return modcheck.import_path(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        return ""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(model: Model, out_dir, fmt: str = "safetensors", channels_first: bool = False,
            force: bool = False, blocks: bool = False, optimize: bool = False) -> Path:
    """Write ``out_dir/model.py``, the weights and the manifest; nothing is left behind on failure.

    ``optimize``: an inference-only model (:mod:`kconv.optimize`: BatchNormalization folded into the
    layer before it, dropout and noise layers dropped); the manifest's ``optimized`` says what was done.

    An existing ``out_dir`` is updated only where kconv wrote it: its files listed in the previous
    manifest (unchanged since) are replaced; any other file, or a kconv file edited since, makes it
    refuse (:class:`OutputError`) unless ``force``. Even with ``force`` a file kconv did not write
    is never deleted or overwritten. ``blocks``: layers sharing a block name prefix become submodules
    (kconv.emit.blocks); the state-dict keys and the manifest follow the nesting.
    """
    if fmt not in FORMATS:
        raise OutputError(f"unknown weights format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "pt":
        import torch  # torch.save; the import check then runs in this process
    checker.start()
    if model.backend_guess_affects:
        names, guess = model.backend_guess_affects, model.backend
        other = "theano" if guess == "tensorflow" else "tensorflow"
        raise KconvError(
            f"Keras {model.keras_version} files do not record the backend that wrote them, and it changes "
            f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''} (Theano's kernels are flipped): pass "
            f"--backend-of-writer {guess} (the likelier one, from its dim_ordering) or {other}")
    shown = str(out_dir)
    out_dir = Path(os.path.abspath(out_dir))
    plan = _plan_target(out_dir, shown, force)
    emitted, opt_plan = model, None
    if optimize:
        from ..optimize import manifest_rows, optimize as _optimize

        emitted, opt_plan = _optimize(model)
    gen = Generator(emitted, channels_first_io=channels_first, blocks=blocks)
    source = gen.generate()
    entries, rows = weight_plan(emitted, gen.defaults, key_of=lambda k: torch_key(gen, k))
    if opt_plan is not None:
        rows = manifest_rows(rows, model, opt_plan)
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.kconv-", dir=parent))
    except OSError as e:
        raise OutputError(f"{shown}: cannot create the output directory ({e.strerror or e}); "
                          "choose a writable -o") from None
    pending = None
    try:
        (tmp / "model.py").write_text(source)
        pending = checker.request(tmp / "model.py")
        wname = "model.safetensors" if fmt == "safetensors" else "model.pt"
        files = {"model.py": _sha256(tmp / "model.py")}
        if fmt == "safetensors":
            # written while the check runs (in the helper process): the dtypes are the stored ones,
            # which the module's are but for odd cases, where the file is written again
            files[wname] = write_weights(tmp / wname, entries)
            source_sha256 = _sha256(Path(model.source))  # before waiting for the helper
            checked = check_state(pending.result(), entries)
            if any(a.dtype != b.dtype for a, b in zip(sorted(entries, key=_key), sorted(checked, key=_key))):
                files[wname] = write_weights(tmp / wname, checked)
        else:
            checked = check_state(pending.result(), entries)
            with progress.task("reading and transforming weights", total=len(checked)) as advance:
                state = {}
                for e in sorted(checked, key=_key):
                    state[e.key] = torch.from_numpy(_as_dtype(e.produce(), e.dtype))
                    advance()
            torch.save(state, tmp / wname)
            files[wname] = _sha256(tmp / wname)
            source_sha256 = _sha256(Path(model.source))
        manifest = {
            "kconv_version": __version__,
            "source": Path(model.source).name,
            "source_sha256": source_sha256,
            "source_path": os.path.abspath(model.source),  # for `kconv verify --all ROOT`
            "source_format": model.format,
            "keras_version": model.keras_version,
            "writer_backend": model.backend,
            "writer_backend_note": model.backend_note,
            "weights_file": wname,
            "channels_first": channels_first,
            "blocks": blocks,
            # --optimize: {"folded_batchnorm": {BatchNormalization: layer folded into}, "dropped": [...]}
            "optimized": opt_plan.to_json() if opt_plan is not None else None,
            "inputs": [r.layer for r in model.inputs],
            "outputs": [str(r) for r in model.outputs],
            # what kconv wrote here, with the content it wrote: a later conversion into the same
            # directory replaces exactly these, and only while they are unchanged
            "files": files,
            "weights": rows,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _permissions_as_umask(tmp)
        _install(tmp, out_dir, plan)
    except OSError as e:
        _failed(tmp, pending)
        raise OutputError(f"{shown}: cannot write the output ({e.strerror or e})") from None
    except BaseException:
        _failed(tmp, pending)
        raise
    return out_dir


def _key(e):
    return e.key


def _as_dtype(a, dtype: str):
    a = np.asarray(a)
    return np.asarray(a if a.dtype.name == dtype else a.astype(stwriter.numpy_dtype(dtype)), order="C")


def write_weights(path: Path, entries: list) -> str:
    """Write model.safetensors one tensor at a time; returns its sha256."""
    with progress.task("reading and transforming weights", total=len(entries)) as advance:
        return stwriter.write(path, entries, each=advance)


def _failed(tmp: Path, pending):
    shutil.rmtree(tmp, ignore_errors=True)
    if pending is not None:
        pending.discard()


def _kconv_files(out_dir: Path) -> dict:
    """{file name: sha256 kconv wrote, or None if unrecorded} for a previous kconv output in ``out_dir``."""
    try:
        man = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(man, dict):
        return {}
    files = man.get("files")
    if isinstance(files, dict):
        out = {str(k): v for k, v in files.items() if isinstance(k, str) and "/" not in k}
    else:  # manifests written before kconv recorded its files
        out = {"model.py": None}
        if isinstance(man.get("weights_file"), str) and man["weights_file"] in ("model.safetensors", "model.pt"):
            out[man["weights_file"]] = None
    out[MANIFEST] = None
    return out


def _plan_target(out_dir: Path, shown: str, force: bool) -> dict:
    """Decide, before any work, how ``out_dir`` will be written. Returns {'mode': 'new'|'merge',
    'ours': [names kconv wrote there before]}; raises OutputError when it would touch a user's file."""
    if out_dir == Path(out_dir.anchor) or (out_dir / ".git").exists():
        raise OutputError(f"{shown}: refusing to write model files into {out_dir}; give -o a directory of its own "
                          "(e.g. -o out/model)")
    if not out_dir.exists() and not out_dir.is_symlink():
        return {"mode": "new", "ours": []}
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise OutputError(f"{shown}: exists and is not a directory; choose another -o")
    try:
        present = sorted(p.name for p in out_dir.iterdir())
    except OSError as e:
        raise OutputError(f"{shown}: cannot read the output directory ({e.strerror or e})") from None
    if not present:
        return {"mode": "merge", "ours": []}
    recorded = _kconv_files(out_dir) if MANIFEST in present else {}
    if not recorded:
        raise OutputError(f"{shown}: exists, is not empty and is not a kconv output directory; choose another -o "
                          "(kconv never writes into a directory of other files)")
    ours, edited, foreign = [], [], []
    for name in present:
        p = out_dir / name
        if name not in recorded or p.is_symlink() or not p.is_file():
            foreign.append(name)
        elif recorded[name] is not None and _sha256(p) != recorded[name]:
            edited.append(name)
        else:
            ours.append(name)
    if (foreign or edited) and not force:
        parts = []
        if foreign:
            parts.append("files kconv did not write: " + ", ".join(foreign[:8]) + (" ..." if len(foreign) > 8 else ""))
        if edited:
            parts.append("kconv files edited since: " + ", ".join(edited))
        raise OutputError(f"{shown}: holds {'; '.join(parts)}; choose another -o, or pass --force to replace "
                          "only kconv's own files (other files are never touched)")
    return {"mode": "merge", "ours": ours + edited}


def _permissions_as_umask(tmp: Path):
    """mkdtemp makes 0700/0600; give the output the modes ``cp`` would (0777/0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    for p in tmp.iterdir():
        os.chmod(p, 0o666 & ~mask)


def _install(tmp: Path, out_dir: Path, plan: dict):
    """Move the finished output from ``tmp`` into ``out_dir`` as planned by :func:`_plan_target`."""
    if plan["mode"] == "new":
        os.replace(tmp, out_dir)
        return
    # an existing directory keeps its inode, modes and the user's files: kconv's files are replaced one
    # by one, the manifest last (until then the old manifest still describes what is there)
    new = sorted(p.name for p in tmp.iterdir())
    for name in new:
        if name != MANIFEST:
            os.replace(tmp / name, out_dir / name)
    for name in plan["ours"]:  # kconv files of the previous conversion that this one does not write
        if name not in new:
            with contextlib.suppress(OSError):
                (out_dir / name).unlink()
    os.replace(tmp / MANIFEST, out_dir / MANIFEST)  # last: the manifest describes a complete output
    tmp.rmdir()


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
    try:
        if (out_dir / "model.safetensors").exists():
            from safetensors.torch import load_file

            wfile = out_dir / "model.safetensors"
            state = load_file(str(wfile))
        elif (out_dir / "model.pt").exists():
            wfile = out_dir / "model.pt"
            state = torch.load(wfile, weights_only=True)
        else:
            raise ModelFileError(out_dir, "no model.safetensors or model.pt")
        net.load_state_dict(state, strict=True)
    except ModelFileError:
        raise
    except Exception as e:  # truncated, damaged or foreign weights: the user's input, not a kconv bug
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelFileError(wfile, f"cannot be loaded into model.py's Model ({type(e).__name__}: {msg[:300]}); "
                                    "convert again") from None
    return net.eval().to(device)
