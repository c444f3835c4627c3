"""Defensive access to HDF5 objects of an untrusted file (h5py only).

Every group member kconv touches is reached link by link through :func:`child`, which accepts hard
links only: soft links and external links (which would make HDF5 open another file) are refused
before they are followed. Datasets are checked by :func:`check_dataset` before their shape is
trusted: no virtual datasets (data from other files), no external storage, a numeric dtype, a
declared size within ``Limits.max_tensor_bytes`` and, for compressed data, within the compression
ratio limit.
"""
from __future__ import annotations

import math

from ..errors import ModelFileError
from .limits import MiB, Limits

RATIO_FLOOR_BYTES = 64 * MiB  # the compression-ratio limit applies above this uncompressed size


def _where(obj) -> str:
    """The file to name in messages: the path h5py opened (for a member of a .keras archive read
    from a file object, h5py reports the object's repr, which kconv.load makes the archive path)."""
    try:
        return obj.file.filename
    except Exception:  # noqa: BLE001 - a closed or odd object
        return "<hdf5>"


def child(group, path: str, *, missing_ok: bool = False):
    """``group[path]`` following hard links only; ``None`` if absent and ``missing_ok``."""
    import h5py

    parts = str(path).split("/")
    if not path or "" in parts or "." in parts:
        if missing_ok:
            return None
        raise ModelFileError(_where(group), f"{group.name}: invalid member name {path!r}")
    # h5py's low-level calls, one link look-up and one open a step: Group.get(getlink=True) and
    # Group[...] cost several times more, and inspect reaches every weight this way (ResNet50: 600
    # steps). Only the object reached is wrapped as an h5py Group or Dataset.
    oid = group.id
    for i, part in enumerate(parts):
        if not isinstance(oid, h5py.h5g.GroupID):
            if missing_ok:
                return None
            where = group.name.rstrip("/") + "/" + "/".join(parts[:i]) if i else group.name
            raise ModelFileError(_where(group), f"{where}: is a dataset, expected a group (looking for {path!r})")
        name = part.encode("utf8")
        try:
            info = oid.links.get_info(name)
        except RuntimeError:  # h5py's error for a missing name, and for some damage
            if oid.links.exists(name):
                raise
            info = None
        if info is None:
            if missing_ok:
                return None
            raise ModelFileError(_where(group), f"{group.name}: {path!r} is missing")
        if info.type != h5py.h5l.TYPE_HARD:
            parent = h5py.Group(oid)
            link = parent.get(part, getlink=True)
            here = parent.name.rstrip("/") + "/" + part
            if isinstance(link, h5py.ExternalLink):
                raise ModelFileError(_where(group), f"{here}: an external link to "
                                                    f"{link.filename!r}, refused (kconv never opens other files)")
            raise ModelFileError(_where(group), f"{here}: a {type(link).__name__}, refused "
                                                "(Keras files hold hard links only)")
        oid = h5py.h5o.open(oid, name)
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    if isinstance(oid, h5py.h5d.DatasetID):
        return _dataset_class()(oid, readonly=True)  # kconv opens files read-only
    return h5py.Datatype(oid)  # a named datatype (refused by its readers)


_STRING_TYPES: dict = {}  # (variable length, cset, size) -> (h5py's memory type, numpy dtype)


_DATASET = []
_NUMERIC_TYPES: list = []  # [(h5py TypeID, numpy dtype)]: the integer and float types datasets had so far


def _dataset_class():
    """h5py's Dataset with its dtype read once (h5py builds it again at each access, and a file kconv
    opens read-only cannot change it), and built once per kind of number: h5py makes a numpy dtype
    from each dataset's HDF5 type (60k instructions; ResNet50 has 320 weights, all float32), where
    telling that type equal to one seen before (H5Tequal: every property of the two) costs a tenth."""
    if not _DATASET:
        import functools

        import h5py

        class Dataset(h5py.Dataset):
            @functools.cached_property
            def dtype(self):
                tid = self.id.get_type()
                if not isinstance(tid, (h5py.h5t.TypeIntegerID, h5py.h5t.TypeFloatID)):
                    return self.id.dtype
                for known, dt in _NUMERIC_TYPES:
                    if tid == known:
                        return dt
                dt = self.id.dtype
                _NUMERIC_TYPES.append((tid.copy(), dt))  # a copy: not a named type of this file
                return dt

        _DATASET.append(Dataset)
    return _DATASET[0]


def string_list_attr(obj, key: str):
    """The names in the string attribute ``key`` of ``obj`` (legacy HDF5's layer_names and weight_names,
    one per layer), as ``[n.decode('utf8') if bytes else str(n) for n in obj.attrs.get(key, [])]``
    reads them: [] when absent; None when it is no string scalar or list (the caller reads it as h5py
    does, and refuses it). h5py's attribute manager builds the numpy dtype and the memory type at each
    read, most of its cost: here they are built once per kind of string."""
    import h5py
    import numpy as np

    oid = obj.id
    name = key.encode("utf8")
    if not h5py.h5a.exists(oid, name):
        return []
    attr = h5py.h5a.open(oid, name)
    shape = attr.shape
    if shape == (0,):  # Keras writes a weightless layer's as an empty float64 array
        return []
    tid = attr.get_type()
    if not isinstance(tid, h5py.h5t.TypeStringID) or shape is None or len(shape) > 1:
        return None
    vlen = tid.is_variable_str()
    kind = (vlen, tid.get_cset(), 0 if vlen else tid.get_size())
    if kind not in _STRING_TYPES:
        dt = attr.dtype  # as h5py's AttributeManager.__getitem__ reads it
        _STRING_TYPES[kind] = (h5py.h5t.py_create(dt), dt)
    mtype, dt = _STRING_TYPES[kind]
    arr = np.zeros(shape, dtype=dt, order="C")
    attr.read(arr, mtype=mtype)
    if vlen:  # h5py: bytes decoded 'utf-8' with 'surrogateescape'
        return [b.decode("utf-8", "surrogateescape") for b in arr.flat]
    return [b.decode("utf8") for b in arr.flat]


def has(group, name: str) -> bool:
    """Whether ``group`` has a direct member ``name`` (any link type; nothing is followed)."""
    import h5py

    return isinstance(group, h5py.Group) and "/" not in name and group.get(name, getlink=True) is not None


def keys(group) -> list[str]:
    return [str(k) for k in group.keys()]


def is_group(group, name: str) -> bool:
    import h5py

    link = group.get(name, getlink=True)
    return isinstance(link, h5py.HardLink) and isinstance(group[name], h5py.Group)


def check_dataset(ds, limits: Limits, what: str = ""):
    """Refuse datasets kconv must not read or cannot read as a weight; returns ``ds``. (The file
    name for a message is looked up only for a message: it costs as much as the checks.)"""
    import h5py

    name = what or ds.name
    if not isinstance(ds, h5py.Dataset):
        raise ModelFileError(_where(ds), f"{name}: a group where a weight dataset was expected")
    # Data at an address in this file (H5Dget_offset: contiguous storage, allocated, no external
    # files) is neither virtual nor external: the creation property list need not be read
    if ds.id.get_offset() is None:
        if ds.is_virtual:
            raise ModelFileError(_where(ds), f"{name}: a virtual dataset (data from other files), refused")
        if ds.external:
            raise ModelFileError(_where(ds), f"{name}: stored in external files {[e[0] for e in ds.external]!r}, "
                                             "refused")
    dt = ds.dtype
    if dt.kind not in "fiub" or h5py.check_vlen_dtype(dt) is not None or h5py.check_string_dtype(dt) is not None:
        bf16 = dt.kind == "V" and dt.itemsize == 2 and _attr_text(ds, "dtype") == "bfloat16"
        if not bf16:
            raise ModelFileError(_where(ds), f"{name}: dtype {dt} is not a numeric tensor type")
    shape = ds.shape
    if shape is None:
        raise ModelFileError(_where(ds), f"{name}: an empty (null-dataspace) dataset")
    if any(int(d) < 0 for d in shape):
        raise ModelFileError(_where(ds), f"{name}: negative dimension in shape {tuple(shape)}")
    nbytes = math.prod(int(d) for d in shape) * dt.itemsize
    if nbytes > limits.max_tensor_bytes:
        raise ModelFileError(_where(ds), f"{name}: declares {tuple(int(d) for d in shape)} {dt} = {nbytes} bytes, over "
                                    f"the {limits.max_tensor_bytes}-byte tensor limit (KCONV_MAX_TENSOR_BYTES)")
    if nbytes > RATIO_FLOOR_BYTES:
        stored = ds.id.get_storage_size()
        if ds.compression is not None or ds.chunks is not None:
            if nbytes > limits.max_compression_ratio * max(stored, 1):
                raise ModelFileError(_where(ds), f"{name}: declares {nbytes} bytes but stores {stored}: over the "
                                            f"compression ratio limit {limits.max_compression_ratio} (a bomb?)")
    return ds


def _attr_text(obj, key):
    try:
        v = obj.attrs.get(key)
    except Exception:  # noqa: BLE001 - unreadable attribute: treat as absent
        return None
    return v.decode("utf8", "replace") if isinstance(v, bytes) else (str(v) if v is not None else None)
