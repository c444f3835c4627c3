"""Archive safety for Keras 3 ``.keras`` files (zip): what kconv refuses before it reads a member
(unsafe names, duplicates, links, encrypted or oversized members, zip bombs), bounded reads, and a
stored member read in place as a file object for h5py. Nothing is ever extracted to disk."""
from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelFileError
from . import h5safe
from .limits import Limits

if TYPE_CHECKING:
    import zipfile

ZIP_SIGNATURE = b"PK\x03\x04"


class MemberSlice:
    """A read-only file object over bytes [start, start+size) of a file.

    zipfile's own member stream re-reads from the start on every backward seek (seconds for a
    100 MB member read by h5py); a stored member is a plain byte range, so read it as one.
    """

    def __init__(self, path, start: int, size: int):
        self._f = open(path, "rb")
        self._path = str(path)
        self._start, self._size, self._pos = start, size, 0

    def __repr__(self):  # h5py names the file by its repr in messages
        return self._path

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n=-1):
        if n is None or n < 0:
            n = self._size - self._pos
        n = max(0, min(n, self._size - self._pos))
        self._f.seek(self._start + self._pos)
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self):
        self._f.close()


class Bytes(io.BytesIO):
    """A decompressed archive member; its repr (what h5py reports as the file name) is the archive path."""

    path = ""

    def __repr__(self):
        return self.path


def member_slice(path: Path, info: zipfile.ZipInfo) -> MemberSlice:
    import struct

    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if len(header) < 30 or header[:4] != ZIP_SIGNATURE:
            raise ModelFileError(path, f"damaged zip entry for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        local_name = f.read(name_len)
    if local_name.decode("utf8", "replace") != info.filename and local_name.decode("cp437") != info.filename:
        raise ModelFileError(path, f"zip entry {info.filename!r}: local header names {local_name[:80]!r}")
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > path.stat().st_size:
        raise ModelFileError(path, f"{info.filename} extends past the end of the archive (truncated file?)")
    return MemberSlice(path, start, info.file_size)


def unsafe_name(name: str) -> str | None:
    """Why a member name is not one a Keras archive would have (we never extract, but refuse anyway)."""
    if "\x00" in name:
        return "a NUL character"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' component (path traversal)"
    return None


def check_archive(path: Path, zf: zipfile.ZipFile, limits: Limits) -> dict:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ModelFileError(path, f"archive has {len(infos)} entries, over the {limits.max_members} limit "
                                   "(KCONV_MAX_MEMBERS)")
    names: dict = {}
    for info in infos:
        why = unsafe_name(info.filename)
        if why:
            raise ModelFileError(path, f"archive member {info.filename[:80]!r} has {why}; refused")
        if info.filename in names:
            raise ModelFileError(path, f"archive has two members named {info.filename[:80]!r}; refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelFileError(path, f"archive member {info.filename[:80]!r} is a symbolic link; refused")
        names[info.filename] = info
    return names


def check_member(path: Path, info: zipfile.ZipInfo, limits: Limits, max_bytes: int, what: str):
    import zipfile  # here: zipfile (shutil, bz2, lzma...) is for .keras files only

    if info.flag_bits & 0x1:
        raise ModelFileError(path, f"{info.filename} is encrypted")
    if info.file_size > max_bytes:
        raise ModelFileError(path, f"{info.filename} is {info.file_size} bytes uncompressed, over the {max_bytes}-"
                                   f"byte limit ({what})")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > h5safe.RATIO_FLOOR_BYTES \
            and info.file_size > limits.max_compression_ratio * max(info.compress_size, 1):
        raise ModelFileError(path, f"{info.filename} expands {info.compress_size} -> {info.file_size} bytes, over "
                                   f"the compression ratio limit {limits.max_compression_ratio} (a zip bomb?; "
                                   "KCONV_MAX_COMPRESSION_RATIO)")


def read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
    """The member's bytes, never more than ``max_bytes`` whatever the headers say."""
    chunks, total = [], 0
    with zf.open(info) as fh:
        while True:
            chunk = fh.read(min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ModelFileError(path, f"{info.filename} decompresses to more than {max_bytes} bytes")
    return b"".join(chunks)
