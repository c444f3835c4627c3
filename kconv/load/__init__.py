"""Read a Keras model file into the model description (kconv.ir) without tensorflow, keras or torch."""
from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path

from ..errors import KconvError, ModelFileError, WeightMismatchError
from ..ir import Model
from . import archive, h5safe
from . import shapes as _shapes
from . import validate, writer
from .archive import ZIP_SIGNATURE
from .config import build_model
from .limits import Limits
from .weights import Context, attach_keras3, attach_legacy, attach_legacy_by_order, check_shapes

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_METADATA_BYTES = 1 << 20

# What a damaged file can make the standard library, h5py or the config walk raise. Anything in
# here while loading is reported as "damaged or unexpected content", exit code 2 (with --traceback
# the original exception is shown). zipfile.BadZipFile too: see _damage().
DAMAGE = (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError, LookupError, RecursionError,
          OverflowError, EOFError, RuntimeError, NotImplementedError, zlib.error, json.JSONDecodeError,
          UnicodeError, MemoryError)


def _damage() -> tuple:
    """DAMAGE and zipfile.BadZipFile (zipfile, with shutil, bz2, lzma..., is imported for .keras
    files only; an ``except`` clause evaluates this only when an exception reaches it)."""
    import zipfile

    return (*DAMAGE, zipfile.BadZipFile)


def sniff(path: Path) -> str:
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise ModelFileError(path, "a directory, but not a TF SavedModel (no saved_model.pb)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFileError(path, e.strerror or str(e)) from None
    if head.startswith(HDF5_SIGNATURE):
        return "h5"
    if head.startswith(ZIP_SIGNATURE):
        return "keras"
    if not head:
        raise ModelFileError(path, "empty file")
    raise ModelFileError(path, "not a Keras model file (neither HDF5 nor a .keras zip archive)")


def load(path, config: str | os.PathLike | None = None, limits: Limits | None = None,
         backend_of_writer: str | None = None, by_name: bool = False) -> Model:
    """Load a Keras model file (``.keras``, ``.h5``/``.hdf5``, TF SavedModel directory) into a
    :class:`kconv.ir.Model`.

    Weight tensors stay in the file until ``Weight.read()``; the file is kept open for that.
    ``config``: the architecture JSON (``model.to_json()`` or a ``config.json``) for a weights-only
    file (legacy ``save_weights`` HDF5, or a Keras 3 layout ``.weights.h5``).
    ``limits``: resource limits for untrusted files; default: :class:`Limits` defaults overridden by
    the ``KCONV_MAX_*`` environment variables (README "Limits and safety").
    ``backend_of_writer``: 'theano' or 'tensorflow', overriding what the file records (Keras 2) or
    what kconv assumes (Keras 1 files do not record it; see :mod:`kconv.load.writer`).
    ``by_name``: for a legacy HDF5 weights file read with ``config``, pair the file's layers with the
    model's by name (Keras's ``load_weights(by_name=True)``) instead of in order (its default).
    """
    path = Path(path)
    if limits is None:
        limits = Limits.from_env()
    kind = sniff(path)
    ctx = Context(path, limits)
    try:
        if by_name and (kind != "h5" or config is None):
            raise ModelFileError(path, "--by-name applies to legacy HDF5 weights files read with --config")
        if kind == "h5":
            model = _load_h5(path, config, ctx, by_name)
        elif kind == "keras":
            model = _load_keras(path, ctx)
        else:
            from .savedmodel import load_savedmodel

            model = load_savedmodel(path, ctx)
        model.source = str(path)
        model.format = kind
        backend, how = writer.resolve(model, model.backend, backend_of_writer)
        model.backend = backend
        model.backend_note = how
        if how and not backend_of_writer:  # a Keras 1 guess: name the layers it decides
            model.backend_guess_affects = writer.guess_affects(model)
        writer.apply(model, backend)
        validate.check_model(model)
        _shapes.infer(model)
        validate.check_refs(model)
        check_shapes(model, ctx)
        ctx.raise_problems()
    except (ModelFileError, WeightMismatchError):
        raise
    except KconvError as e:
        raise ModelFileError(path, str(e)) from e
    except _damage() as e:
        raise ModelFileError(path, f"damaged or unexpected content ({type(e).__name__}: {_short(e)})") from e
    return model


def _short(e, n: int = 200) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[:n] + "..."


def _json(raw, path, what):
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf8")
        except UnicodeDecodeError as e:
            raise ModelFileError(path, f"{what} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelFileError(path, f"{what} is not valid JSON ({e.msg} at char {e.pos})") from None
    except RecursionError:
        raise ModelFileError(path, f"{what} is nested too deeply") from None


def _read_config_file(config_path, limits: Limits):
    p = Path(config_path)
    try:
        size = p.stat().st_size
        if size > limits.max_config_bytes:
            raise ModelFileError(p, f"{size} bytes, over the {limits.max_config_bytes}-byte config limit "
                                    "(KCONV_MAX_CONFIG_BYTES)")
        return _json(p.read_bytes(), config_path, "architecture JSON")
    except OSError as e:
        raise ModelFileError(p, e.strerror or str(e)) from None


def _load_h5(path: Path, config_path, ctx: Context, by_name: bool = False) -> Model:
    import h5py

    limits = ctx.limits
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001 - h5py raises OSError, and others for some damage
        raise ModelFileError(path, f"cannot open as HDF5 ({_short(e)})") from None
    try:
        if config_path is not None:
            cfg = _read_config_file(config_path, limits)
        elif "model_config" in f.attrs:
            size = f.attrs.get_id("model_config").get_storage_size()
            if size > limits.max_config_bytes:
                raise ModelFileError(path, f"model_config attribute is {size} bytes, over the "
                                           f"{limits.max_config_bytes}-byte limit (KCONV_MAX_CONFIG_BYTES)")
            raw = f.attrs["model_config"]
            if not isinstance(raw, (bytes, str)):
                raise ModelFileError(path, f"model_config attribute is {type(raw).__name__}, not JSON text")
            if len(raw) > limits.max_config_bytes:
                raise ModelFileError(path, f"model_config attribute is {len(raw)} bytes, over the "
                                           f"{limits.max_config_bytes}-byte limit (KCONV_MAX_CONFIG_BYTES)")
            cfg = _json(raw, path, "model_config attribute")
        else:
            raise ModelFileError(path, "no model_config attribute: a weights-only file; pass the architecture "
                                       "with --config model.json")
        if not isinstance(cfg, dict) or "class_name" not in cfg:
            raise ModelFileError(path, "model_config is not a Keras model config")
        model = build_model(cfg)
        wgroup = h5safe.child(f, "model_weights", missing_ok=True)
        if wgroup is None:
            wgroup = f
        if not isinstance(wgroup, h5py.Group):
            raise ModelFileError(path, "model_weights is a dataset, not a group")
        if "layer_names" not in wgroup.attrs and h5safe.is_group(f, "layers"):
            # Keras 3 layout weights file (model.save_weights('x.weights.h5') in Keras 3, or Keras 2.13+):
            # layers/<name>/vars/<i>, no names: the architecture must come from --config.
            if config_path is None:
                raise ModelFileError(path, "a Keras 3 layout weights file (.weights.h5) without architecture; "
                                           "pass it with --config config.json (or model.to_json() output)")
            attach_keras3(model, f, ctx, by_path=True)
        elif config_path is not None and not by_name:
            # an architecture from elsewhere: Keras's load_weights pairs layers in order (by_name=False)
            attach_legacy_by_order(model, wgroup, ctx)
        else:
            attach_legacy(model, wgroup, ctx)
        opt = h5safe.child(f, "optimizer_weights", missing_ok=True)
        if isinstance(opt, h5py.Group):  # model.save() of a compiled, trained model
            shapes = _dataset_shapes(opt)
            model.optimizer_state = {"where": "optimizer_weights group", "variables": len(shapes),
                                     "values": int(sum(math.prod(s) for s in shapes))}
        model.keras_version = _attr(f, wgroup, "keras_version")
        model.backend = _attr(f, wgroup, "backend")
        if config_path is not None and isinstance(cfg, dict):
            # to_json() records the writer's version and backend next to the config
            model.keras_version = model.keras_version or str(cfg.get("keras_version", ""))[:100]
            model.backend = model.backend or str(cfg.get("backend", ""))[:100]
        if not model.keras_version and any(ly.config.get("_keras1") for _, ly in model.walk()):
            # Keras 1's save_weights records no version; its config dialect says which Keras wrote it
            # (the version decides e.g. hard_sigmoid's formula)
            model.keras_version = "1"
    except BaseException:
        f.close()
        raise
    model._file = f  # keeps the file open for lazy reads
    return model


def _dataset_shapes(group, depth: int = 0) -> list:
    """Shapes of the datasets below ``group``, reached through hard links only (h5safe)."""
    import h5py

    out = []
    for k in h5safe.keys(group):
        obj = h5safe.child(group, k)
        if isinstance(obj, h5py.Dataset):
            out.append(obj.shape)
        elif isinstance(obj, h5py.Group) and depth < 16:
            out.extend(_dataset_shapes(obj, depth + 1))
    return out


def _attr(f, g, key):
    for obj in (f, g):
        if key in obj.attrs:
            v = obj.attrs[key]
            text = v.decode("utf8", "replace") if isinstance(v, bytes) else str(v)
            return text[:100]
    return ""


def _load_keras(path: Path, ctx: Context) -> Model:
    import zipfile

    import h5py

    limits = ctx.limits
    try:
        zf = zipfile.ZipFile(path)
    except Exception as e:  # noqa: BLE001 - BadZipFile, OSError, ValueError... for damaged archives
        raise ModelFileError(path, f"damaged .keras archive ({_short(e)})") from None
    try:
        names = archive.check_archive(path, zf, limits)
        if "config.json" not in names:
            raise ModelFileError(path, "no config.json in the archive (not a Keras 3 .keras file)")
        info = names["config.json"]
        archive.check_member(path, info, limits, limits.max_config_bytes, "KCONV_MAX_CONFIG_BYTES")
        cfg = _json(archive.read_member(path, zf, info, limits.max_config_bytes), path, "config.json")
        if not isinstance(cfg, dict) or "class_name" not in cfg:
            raise ModelFileError(path, "config.json is not a Keras model config")
        meta = {}
        if "metadata.json" in names and names["metadata.json"].file_size <= MAX_METADATA_BYTES:
            archive.check_member(path, names["metadata.json"], limits, MAX_METADATA_BYTES, "metadata")
            raw = archive.read_member(path, zf, names["metadata.json"], MAX_METADATA_BYTES)
            meta = _json(raw, path, "metadata.json")
            if not isinstance(meta, dict):
                meta = {}
        model = build_model(cfg)
        if "model.weights.h5" not in names:
            raise ModelFileError(path, "no model.weights.h5 in the archive")
        winfo = names["model.weights.h5"]
        if winfo.compress_type == zipfile.ZIP_STORED and not winfo.flag_bits & 0x1:
            if winfo.compress_size != winfo.file_size:
                raise ModelFileError(path, "model.weights.h5: stored member with inconsistent sizes")
            fobj = archive.member_slice(path, winfo)  # h5py reads the stored member in place
        else:
            archive.check_member(path, winfo, limits, limits.max_member_bytes, "KCONV_MAX_MEMBER_BYTES")
            fobj = archive.Bytes(archive.read_member(path, zf, winfo, limits.max_member_bytes))
            fobj.path = str(path)
        try:
            f = h5py.File(fobj, "r")
        except Exception as e:  # noqa: BLE001
            fobj.close()
            raise ModelFileError(path, f"model.weights.h5 is not readable HDF5 ({_short(e)})") from None
        try:
            attach_keras3(model, f, ctx, by_path=True)
        except BaseException:
            f.close()
            fobj.close()
            raise
    except BaseException:
        zf.close()
        raise
    model.keras_version = str(meta.get("keras_version", ""))
    model.backend = str(meta.get("backend", ""))  # .keras metadata usually does not record it
    model._file = (zf, fobj, f)
    return model
