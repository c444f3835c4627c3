"""``model.safetensors`` written one tensor at a time, with numpy only (no torch import).

The format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header
length, a JSON header ``{key: {"dtype", "shape", "data_offsets": [begin, end]}}``, then the raw
little-endian bytes of each tensor. The file is laid out as safetensors' own ``save_file`` lays it
out (safetensors 0.4-0.8, ``prepare`` in its Rust core), so the bytes are the same as before kconv
wrote them itself: tensors sorted by dtype, widest first in the order of safetensors' ``Dtype`` enum,
then by key; compact JSON in that order; the header padded with spaces to a multiple of 8 bytes.

Each tensor is produced (read from the Keras file and transformed) only when its turn comes and
written in slices of at most :data:`CHUNK` bytes, so converting holds one Keras tensor in memory at
a time, plus a slice of its transformed copy; the sha256 of the file is computed as it is written.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable

import numpy as np

# safetensors' Dtype enum, in its declaration order (the order save_file sorts by, descending)
DTYPE_CODES = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3",
    "int16": "I16", "uint16": "U16", "float16": "F16", "bfloat16": "BF16", "int32": "I32", "uint32": "U32",
    "float32": "F32", "complex64": "C64", "float64": "F64", "int64": "I64", "uint64": "U64",
}
_RANK = {name: i for i, name in enumerate(DTYPE_CODES)}
CHUNK = 16 << 20


@dataclass
class Entry:
    """One tensor of the file: its key, numpy dtype name, shape, and a function giving its data."""

    key: str
    dtype: str
    shape: tuple
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n * _itemsize(self.dtype)


def _itemsize(dtype: str) -> int:
    if dtype.startswith("float8"):
        return 1
    if dtype == "bfloat16":
        return 2
    return np.dtype(dtype).itemsize


def numpy_dtype(name: str):
    if name == "bfloat16" or name.startswith("float8"):
        import ml_dtypes  # a dependency of every numpy-side source of such arrays (h5py reads them as void)

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def ordered(entries: list[Entry]) -> list[Entry]:
    """The entries in the file's order (safetensors': dtype widest first, then key)."""
    for e in entries:
        if e.dtype not in DTYPE_CODES:
            raise ValueError(f"{e.key}: dtype {e.dtype} has no safetensors code")
    return sorted(entries, key=lambda e: (-_RANK[e.dtype], e.key))


def header(entries: list[Entry]) -> bytes:
    """The 8-byte length and the padded JSON header of a file holding ``entries`` (in file order)."""
    meta, offset = {}, 0
    for e in entries:
        meta[e.key] = {"dtype": DTYPE_CODES[e.dtype], "shape": [int(d) for d in e.shape],
                       "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    text = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode("utf8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write(path, entries: list[Entry], each=None) -> str:
    """Write ``entries`` to ``path`` as safetensors; returns the sha256 of the file. Each array is
    cast to its entry's dtype (as ``tensor.to(dtype)`` would) and must have the entry's shape.
    ``each()`` is called after each tensor (progress)."""
    entries = ordered(entries)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        def put(buf):
            h.update(buf)
            f.write(buf)

        put(header(entries))
        for e in entries:
            a = np.asarray(e.produce())
            if a.dtype.name != e.dtype:
                a = a.astype(numpy_dtype(e.dtype))
            if tuple(a.shape) != tuple(e.shape):
                raise ValueError(f"{e.key}: produced shape {tuple(a.shape)}, planned {tuple(e.shape)}")
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            _write_array(put, a)
            del a
            if each is not None:
                each()
    return h.hexdigest()


def _write_array(put, a: np.ndarray):
    """The C-order bytes of ``a`` (possibly a strided view) in slices of at most CHUNK bytes: only a
    slice is ever copied, never the whole array."""
    if a.size == 0:
        return
    if a.ndim == 0 or a.flags.c_contiguous:
        flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        for i in range(0, flat.size, CHUNK):
            put(memoryview(flat[i:i + CHUNK]))
        return
    row = a[0].nbytes if a.shape[0] else 0
    if row > CHUNK and a.ndim > 1:  # a single row is still large: slice within it
        for i in range(a.shape[0]):
            _write_array(put, a[i])
        return
    step = max(1, CHUNK // max(row, 1))
    for i in range(0, a.shape[0], step):
        part = np.ascontiguousarray(a[i:i + step])
        put(memoryview(part.reshape(-1).view(np.uint8)))
