"""Hostile and broken inputs (issue 6): a corpus of damaged files derived from the good fixtures.

Every case must end, within a time bound, in exit code 0 (harmless damage) or 2/3 with one
'kconv: error:' line naming the file; never exit 4 (internal error), never a traceback, never a
partial output directory, never code from the file run (the Lambda marker fixture).

The corpus is built by :func:`build_corpus` (pure functions of the committed fixtures and a seed), so
a failing case can be rebuilt and rerun by its id. ``KCONV_CORPUS_SCALE=4`` makes it larger.
"""
from __future__ import annotations

import io
import json
import os
import random
import resource
import stat
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import kconv
from kconv.cli import main
from kconv.errors import ModelFileError, NonFiniteWeightWarning, WeightMismatchError
from kconv.load import Limits

from conftest import FIXTURES

HOSTILE = FIXTURES / "hostile"
TIME_BOUND_S = 10.0
SCALE = int(os.environ.get("KCONV_CORPUS_SCALE", "1"))


# ------------------------------------------------------------------------------------------ helpers

def _zip_members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def _write_zip(path: Path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are written on purpose
        with zipfile.ZipFile(path, "w", compression) as zf:
            for m in members:
                if isinstance(m, zipfile.ZipInfo):
                    raise TypeError
                name, data, *info = m
                zi = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                zi.compress_type = compression
                if info:
                    info[0](zi)
                zf.writestr(zi, data)
    return path


def _keras_with_config(src: Path, dst: Path, config_bytes: bytes) -> Path:
    members = [(n, config_bytes if n == "config.json" else d) for n, d in _zip_members(src)]
    return _write_zip(dst, members)


def _h5_copy(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _keras_with_weights(src: Path, dst: Path, edit) -> Path:
    """Rewrite model.weights.h5 inside a .keras archive with ``edit(h5file)``."""
    members = _zip_members(src)
    weights = dict(members)["model.weights.h5"]
    tmp = dst.with_suffix(".weights.h5")
    tmp.write_bytes(weights)
    with h5py.File(tmp, "r+") as f:
        edit(f)
    new = tmp.read_bytes()
    tmp.unlink()
    return _write_zip(dst, [(n, new if n == "model.weights.h5" else d) for n, d in members])


def _replace_ds(group, name, data=None, **kw):
    del group[name]
    return group.create_dataset(name, data=data, **kw)


# ------------------------------------------------------------------------------------------- corpus

def build_corpus(d: Path, seed: int = 0) -> list[tuple[str, Path]]:
    """(case id, file) for every damaged file; everything derived from fixtures/ and ``seed``."""
    rng = random.Random(seed)
    cases: list[tuple[str, Path]] = []

    def add(case_id, path):
        cases.append((case_id, Path(path)))

    sources = [FIXTURES / n for n in ("cnn.keras", "cnn.h5", "cnn_k2.h5", "multi_io.keras", "text_rnn.h5")]

    # 1. truncated at many offsets
    for src in sources:
        data = src.read_bytes()
        offsets = {0, 1, 4, 7, 8, 9, 64, 512, 2048, len(data) // 2, len(data) - 22, len(data) - 1}
        offsets |= {rng.randrange(1, len(data)) for _ in range(6 * SCALE)}
        for off in sorted(o for o in offsets if 0 <= o < len(data)):
            add(f"trunc-{src.name}-{off}", _put(d / f"trunc-{off}-{src.name}", data[:off]))

    # 2. random bytes, with and without a valid signature
    for i in range(4 * SCALE):
        n = rng.randrange(1, 5000)
        blob = bytes(rng.randrange(256) for _ in range(n))
        add(f"random-{i}", _put(d / f"random-{i}.bin", blob))
        add(f"random-h5sig-{i}", _put(d / f"random-h5sig-{i}.h5", b"\x89HDF\r\n\x1a\n" + blob))
        add(f"random-zipsig-{i}", _put(d / f"random-zipsig-{i}.keras", b"PK\x03\x04" + blob))

    # 3. flipped bytes: HDF5 headers (superblock, object headers near the start), zip headers/directory
    for src in sources:
        data = src.read_bytes()
        regions = [(0, min(4096, len(data)))]
        if src.suffix == ".keras":
            regions = [(0, 120), (len(data) - 400, len(data))]  # local header; central directory
        for k in range(8 * SCALE):
            lo, hi = regions[k % len(regions)]
            b = bytearray(data)
            for _ in range(rng.choice((1, 1, 3))):
                b[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
            add(f"flip-{src.name}-{k}", _put(d / f"flip-{k}-{src.name}", bytes(b)))

    # 4. flipped bytes inside the config JSON
    cnn_keras = FIXTURES / "cnn.keras"
    cfg_bytes = dict(_zip_members(cnn_keras))["config.json"]
    for k in range(10 * SCALE):
        b = bytearray(cfg_bytes)
        b[rng.randrange(len(b))] = rng.choice(b'{}[]",:0123456789-e.tfn \x00\xff')
        add(f"jsonflip-{k}", _keras_with_config(cnn_keras, d / f"jsonflip-{k}.keras", bytes(b)))
    src_h5 = FIXTURES / "cnn.h5"
    with h5py.File(src_h5) as f:
        h5cfg = f.attrs["model_config"]
    h5cfg = h5cfg.encode() if isinstance(h5cfg, str) else h5cfg
    for k in range(4 * SCALE):
        b = bytearray(h5cfg)
        b[rng.randrange(len(b))] = rng.choice(b'{}[]",:0123456789')

        def edit(f, b=bytes(b)):
            f.attrs["model_config"] = b
        add(f"h5jsonflip-{k}", _h5_copy(src_h5, d / f"h5jsonflip-{k}.h5", edit))

    # 5. configs with missing / extra / wrong-typed keys
    cfg = json.loads(cfg_bytes)
    weird = ["x", -1, 0, 10**30, 2.5, None, [], {}, [1, "a"], {"a": 1}, True, float("nan")]
    layers = cfg["config"]["layers"]
    for li, layer in enumerate(layers):
        keys = sorted(layer["config"].keys())
        for key in keys:
            c = json.loads(cfg_bytes)
            del c["config"]["layers"][li]["config"][key]
            add(f"cfg-del-{li}-{key}", _keras_with_config(cnn_keras, d / f"cfg-del-{li}-{key}.keras", _dump(c)))
        for key in keys:
            c = json.loads(cfg_bytes)
            c["config"]["layers"][li]["config"][key] = rng.choice(weird)
            add(f"cfg-type-{li}-{key}", _keras_with_config(cnn_keras, d / f"cfg-type-{li}-{key}.keras", _dump(c)))
        c = json.loads(cfg_bytes)
        c["config"]["layers"][li]["config"]["unexpected_key"] = {"nested": [1, 2]}
        add(f"cfg-extra-{li}", _keras_with_config(cnn_keras, d / f"cfg-extra-{li}.keras", _dump(c)))
        for key in ("class_name", "inbound_nodes", "name", "config"):
            c = json.loads(cfg_bytes)
            c["config"]["layers"][li].pop(key, None)
            add(f"cfg-entry-del-{li}-{key}", _keras_with_config(cnn_keras, d / f"cfg-edel-{li}-{key}.keras", _dump(c)))
            c = json.loads(cfg_bytes)
            c["config"]["layers"][li][key] = rng.choice(weird)
            add(f"cfg-entry-type-{li}-{key}", _keras_with_config(cnn_keras, d / f"cfg-etype-{li}-{key}.keras",
                                                                 _dump(c)))
    structural = {
        "no-layers": lambda c: c["config"].pop("layers"),
        "layers-dict": lambda c: c["config"].__setitem__("layers", {}),
        "empty-layers": lambda c: c["config"].__setitem__("layers", []),
        "top-list": lambda c: c.__setitem__("config", [1, 2]),
        "unknown-class": lambda c: c["config"]["layers"][2].__setitem__("class_name", "NoSuchLayer"),
        "model-class": lambda c: c["config"]["layers"][2].__setitem__("class_name", "Functional"),
        "dup-names": lambda c: c["config"]["layers"][2]["config"].__setitem__("name", layers[1]["config"]["name"]),
        "cycle": lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"].__setitem__(
            "keras_history", [layers[-1]["name"], 0, 0]),
        "dangling": lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"].__setitem__(
            "keras_history", ["nowhere", 0, 0]),
        "bad-history": lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"].__setitem__(
            "keras_history", ["x"]),
        "node-index": lambda c: c["config"]["layers"][1]["inbound_nodes"][0]["args"][0]["config"].__setitem__(
            "keras_history", [layers[0]["name"], 99, 99]),
        "io-bad": lambda c: c["config"].__setitem__("output_layers", [["nowhere", 0, 0]]),
        "io-type": lambda c: c["config"].__setitem__("input_layers", 5),
        "batch-shape-neg": lambda c: c["config"]["layers"][0]["config"].__setitem__("batch_shape", [None, -5, 16, 3]),
        "batch-shape-huge": lambda c: c["config"]["layers"][0]["config"].__setitem__("batch_shape",
                                                                                      [None, 10**12, 10**12, 3]),
        "batch-shape-str": lambda c: c["config"]["layers"][0]["config"].__setitem__("batch_shape", "abc"),
        "lambda-garbage": lambda c: c["config"]["layers"].insert(1, {
            "class_name": "Lambda", "name": "lam", "config": {"name": "lam", "function": {
                "class_name": "__lambda__", "config": {"code": "!!notbase64\x00" * 3}}},
            "inbound_nodes": layers[1]["inbound_nodes"]}),
    }
    for name, fn in structural.items():
        c = json.loads(cfg_bytes)
        fn(c)
        add(f"cfg-{name}", _keras_with_config(cnn_keras, d / f"cfg-{name}.keras", _dump(c)))
    deep = b"[" * 100000 + b"]" * 100000
    add("cfg-deep-json", _keras_with_config(cnn_keras, d / "cfg-deep.keras", deep))
    add("cfg-not-utf8", _keras_with_config(cnn_keras, d / "cfg-utf8.keras", b'{"a": "\xff\xfe"}'))
    add("cfg-json-list", _keras_with_config(cnn_keras, d / "cfg-list.keras", b"[1, 2, 3]"))

    # 6. weights: wrong shapes, missing / extra datasets, wrong dtypes, absurd shapes, groups for datasets
    def k3(name, edit):
        add(f"w3-{name}", _keras_with_weights(cnn_keras, d / f"w3-{name}.keras", edit))

    def k2(name, edit, src=src_h5):
        add(f"wh5-{name}-{src.stem}", _h5_copy(src, d / f"wh5-{name}-{src.name}", edit))

    conv = "layers/conv2d/vars"
    k3("shape-kernel", lambda f: _replace_ds(f[conv], "0", np.zeros((3, 3, 3, 9), "f4")))
    k3("shape-bias", lambda f: _replace_ds(f[conv], "1", np.zeros((9,), "f4")))
    k3("shape-dense", lambda f: _replace_ds(f["layers/dense/vars"], "0", np.zeros((35, 10), "f4")))
    k3("shape-bn", lambda f: _replace_ds(f["layers/batch_normalization/vars"], "2", np.zeros((7,), "f4")))
    k3("shape-prelu", lambda f: _replace_ds(f["layers/p_re_lu/vars"], "0", np.zeros((8,), "f4")))
    k3("rank0", lambda f: _replace_ds(f[conv], "1", np.float32(1)))
    k3("missing", lambda f: f[conv].__delitem__("1"))
    k3("missing-first", lambda f: f[conv].__delitem__("0"))
    k3("missing-layer", lambda f: f["layers"].__delitem__("dense"))
    k3("no-layers-group", lambda f: f.__delitem__("layers"))
    k3("extra", lambda f: f[conv].create_dataset("2", data=np.zeros(3, "f4")))
    k3("str-dtype", lambda f: _replace_ds(f[conv], "1", np.array([b"abc"] * 8)))
    k3("vlen-dtype", lambda f: _replace_ds(f[conv], "1", shape=(8,), dtype=h5py.vlen_dtype("f4")))
    k3("compound-dtype", lambda f: _replace_ds(f[conv], "1", np.zeros(8, dtype=[("a", "f4"), ("b", "i4")])))
    k3("object-str", lambda f: _replace_ds(f[conv], "1", shape=(8,), dtype=h5py.string_dtype()))
    k3("huge-shape", lambda f: _replace_ds(f[conv], "1", shape=(2**40, 2**20), dtype="f4", chunks=(1, 1)))
    k3("huge-ratio", lambda f: _replace_ds(f[conv], "1", shape=(2**27,), dtype="f4", chunks=(2**20,),
                                           compression="gzip"))
    k3("group-for-ds", lambda f: (f[conv].__delitem__("1"), f[conv].create_group("1")))
    k3("ds-for-vars", lambda f: (f["layers/conv2d"].__delitem__("vars"),
                                 f["layers/conv2d"].create_dataset("vars", data=[1.0])))
    k3("soft-link", lambda f: (f[conv].__delitem__("1"), f[conv].__setitem__("1", h5py.SoftLink("/layers/dense/vars/1"))))
    k3("soft-loop", lambda f: (f["layers"].__delitem__("dense"),
                               f["layers"].__setitem__("dense", h5py.SoftLink("/layers/dense"))))
    k3("external-link", lambda f: (f[conv].__delitem__("1"),
                                   f[conv].__setitem__("1", h5py.ExternalLink(str(d / "elsewhere.h5"), "/x"))))
    k3("external-link-group", lambda f: (f["layers"].__delitem__("dense"),
                                         f["layers"].__setitem__("dense", h5py.ExternalLink("/etc/passwd", "/"))))
    k3("external-storage", lambda f: _external_storage(f[conv], "1", d))
    k3("virtual", lambda f: _virtual(f[conv], "1", d))
    k3("nan", lambda f: _replace_ds(f[conv], "1", np.full((8,), np.nan, "f4")))

    mw = "model_weights"
    k2("shape-kernel", lambda f: _replace_ds(f[f"{mw}/conv2d/conv2d"], "kernel", np.zeros((5, 3, 3, 8), "f4")))
    k2("missing", lambda f: f[f"{mw}/conv2d/conv2d"].__delitem__("bias"))
    k2("missing-group", lambda f: f[mw].__delitem__("dense"))
    k2("layer-names-int", lambda f: f[mw].attrs.__setitem__("layer_names", np.arange(3)))
    k2("weight-names-2d", lambda f: f[f"{mw}/conv2d"].attrs.__setitem__("weight_names",
                                                                         np.array([[b"a", b"b"], [b"c", b"d"]])))
    k2("weight-names-missing", lambda f: f[f"{mw}/conv2d"].attrs.__setitem__("weight_names", [b"conv2d/nothing"]))
    k2("weight-names-traversal", lambda f: f[f"{mw}/conv2d"].attrs.__setitem__("weight_names", [b"../dense/kernel"]))
    k2("weight-names-abs", lambda f: f[f"{mw}/conv2d"].attrs.__setitem__("weight_names", [b"/model_weights"]))
    k2("external-link", lambda f: (f[f"{mw}/conv2d/conv2d"].__delitem__("kernel"),
                                   f[f"{mw}/conv2d/conv2d"].__setitem__("kernel", h5py.ExternalLink("/etc/passwd", "/"))))
    k2("external-mw", lambda f: (f.__delitem__(mw), f.__setitem__(mw, h5py.ExternalLink(str(src_h5), "/" + mw))))
    k2("virtual", lambda f: _virtual(f[f"{mw}/conv2d/conv2d"], "bias", d))
    k2("external-storage", lambda f: _external_storage(f[f"{mw}/conv2d/conv2d"], "bias", d))
    k2("no-config", lambda f: f.attrs.__delitem__("model_config"))
    k2("config-int", lambda f: f.attrs.__setitem__("model_config", 5))
    k2("config-array", lambda f: f.attrs.__setitem__("model_config", np.arange(4)))
    k2("no-layer-names", lambda f: f[mw].attrs.__delitem__("layer_names"))
    k2("mw-dataset", lambda f: (f.__delitem__(mw), f.create_dataset(mw, data=[1])))
    k2("nan", lambda f: _replace_ds(f[f"{mw}/dense/dense"], "bias", np.array([np.inf] + [0.0] * 9, "f4")))
    k2("shape-kernel", lambda f: _replace_ds(f[f"{mw}/conv2d/conv2d"], "kernel:0", np.zeros((3, 3, 2, 8), "f4")),
       src=FIXTURES / "cnn_k2.h5")
    k2("missing", lambda f: f[f"{mw}/conv2d/conv2d"].__delitem__("bias:0"), src=FIXTURES / "cnn_k2.h5")

    # 7. archives: bombs, traversal, symlinks, duplicates, encryption flag, odd compression
    good = _zip_members(cnn_keras)
    bomb = d / "bomb.keras"
    zeros = b"\0" * (80 << 20)
    _write_zip(bomb, [(n, zeros if n == "model.weights.h5" else data) for n, data in good], zipfile.ZIP_DEFLATED)
    add("zip-bomb-weights", bomb)
    add("zip-bomb-config", _write_zip(d / "bomb-config.keras",
                                      [(n, b" " * (65 << 20) if n == "config.json" else data) for n, data in good],
                                      zipfile.ZIP_DEFLATED))
    add("zip-deflated-ok", _write_zip(d / "deflated.keras", good, zipfile.ZIP_DEFLATED))
    add("zip-traversal", _write_zip(d / "trav.keras", good + [("../../evil.txt", b"x")]))
    add("zip-absolute", _write_zip(d / "abs.keras", good + [("/etc/evil", b"x")]))
    add("zip-traversal-config", _write_zip(d / "trav2.keras", [("../config.json" if n == "config.json" else n, x)
                                                                for n, x in good]))
    add("zip-symlink", _write_zip(d / "link.keras", good + [("link", b"/etc/passwd",
                                                             lambda zi: setattr(zi, "external_attr",
                                                                                (stat.S_IFLNK | 0o777) << 16))]))
    add("zip-symlink-weights", _write_zip(d / "link2.keras", [
        (n, b"/etc/passwd" if n == "model.weights.h5" else x,
         (lambda zi: setattr(zi, "external_attr", (stat.S_IFLNK | 0o777) << 16)) if n == "model.weights.h5"
         else (lambda zi: None)) for n, x in good]))
    add("zip-duplicate", _write_zip(d / "dup.keras", good + [("config.json", b"{}")]))
    add("zip-no-config", _write_zip(d / "nocfg.keras", [(n, x) for n, x in good if n != "config.json"]))
    add("zip-no-weights", _write_zip(d / "nowts.keras", [(n, x) for n, x in good if n != "model.weights.h5"]))
    add("zip-empty", _write_zip(d / "empty.keras", []))
    add("zip-weights-not-h5", _write_zip(d / "notw.keras", [(n, b"hello" if n == "model.weights.h5" else x)
                                                           for n, x in good]))
    add("zip-encrypted-flag", _put(d / "enc.keras", _set_encrypted(cnn_keras)))
    add("zip-bzip2", _write_zip(d / "bz.keras", good, zipfile.ZIP_BZIP2))
    add("zip-lzma", _write_zip(d / "lzma.keras", good, zipfile.ZIP_LZMA))
    add("zip-many", _write_zip(d / "many.keras", good + [(f"junk/{i}", b"") for i in range(10_050)]))
    add("zip-crc", _put(d / "crc.keras", _corrupt_config_crc(cnn_keras)))
    add("zip-size-lie", _put(d / "sizelie.keras", _lie_weights_size(cnn_keras)))
    return cases


def _put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _dump(c) -> bytes:
    return json.dumps(c).encode()


def _external_storage(group, name, d: Path):
    raw = d / f"raw-{abs(hash(group.name))}.bin"
    raw.write_bytes(np.zeros(8, "f4").tobytes())
    del group[name]
    group.create_dataset(name, shape=(8,), dtype="f4", external=[(str(raw), 0, 32)])


def _virtual(group, name, d: Path):
    other = d / f"vsrc-{abs(hash(group.name))}.h5"
    with h5py.File(other, "w") as g:
        g.create_dataset("x", data=np.zeros(8, "f4"))
    layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(8,))
    del group[name]
    group.create_virtual_dataset(name, layout)


def _corrupt_config_crc(src: Path) -> bytes:
    """config.json's bytes changed in place, so its stored CRC no longer matches."""
    data = bytearray(src.read_bytes())
    i = data.find(b'"class_name"')
    data[i + 1] = ord("K")
    return bytes(data)


def _set_encrypted(src: Path) -> bytes:
    """The 'encrypted' flag set on every member (local headers and central directory)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        for info in zf.infolist():
            data[info.header_offset + 6] |= 1
    cd = data.find(b"PK\x01\x02")
    while cd >= 0:
        data[cd + 8] |= 1
        cd = data.find(b"PK\x01\x02", cd + 4)
    return bytes(data)


def _lie_weights_size(src: Path) -> bytes:
    """Central directory says model.weights.h5 is 4 GiB (stored): beyond the end of the archive."""
    import struct

    data = bytearray(src.read_bytes())
    cd = data.rfind(b"PK\x01\x02model.weights.h5"[:4])
    while cd >= 0:
        n = struct.unpack_from("<H", data, cd + 28)[0]
        if data[cd + 46: cd + 46 + n] == b"model.weights.h5":
            struct.pack_into("<II", data, cd + 20, 0xFFFFFFF0, 0xFFFFFFF0)
            break
        cd = data.rfind(b"PK\x01\x02", 0, cd)
    return bytes(data)


# ------------------------------------------------------------------------------------------- runner

def _run(args, env=None):
    runner = CliRunner()
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(main, args, env=env, catch_exceptions=True)
    return result, time.monotonic() - t0


def _check(case_id, path, result, elapsed, out_dir=None):
    """Problems with one CLI result (empty list: fine)."""
    problems = []
    err = result.stderr
    if elapsed > TIME_BOUND_S:
        problems.append(f"took {elapsed:.1f} s")
    if result.exit_code not in (0, 2, 3):
        problems.append(f"exit {result.exit_code}: {err.strip()[:300]} {result.exception!r}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"exception escaped: {result.exception!r}")
    if "Traceback" in err or "Traceback" in result.stdout:
        problems.append("traceback printed")
    if result.exit_code in (2, 3):
        lines = [ln for ln in err.splitlines() if ln.startswith("kconv: error:")]
        if len(lines) != 1 or str(path) not in lines[0]:
            problems.append(f"not one error line naming the file: {err!r}")
    if out_dir is not None:
        leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.kconv-")]
        if leftovers:
            problems.append(f"temporary output left behind: {leftovers}")
        if result.exit_code != 0 and out_dir.exists():
            problems.append("partial output written")
    return [f"{case_id}: {p}" for p in problems]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    return d, build_corpus(d)


def test_corpus_never_crashes(corpus, tmp_path, capsys):
    # torch imported up front (convert's import check then runs in this process): the time bound is
    # for kconv's work on each file, not for the first conversion's ``import torch`` on a loaded machine
    import torch  # noqa: F401

    d, cases = corpus
    assert len(cases) > 300
    counts = {"tried": 0, "ok": 0, "clean_error": 0, "crash": 0}
    converted = 0
    problems = []
    for i, (case_id, path) in enumerate(cases):
        result, elapsed = _run(["inspect", str(path), "--check-values"])
        counts["tried"] += 1
        found = _check(case_id, path, result, elapsed)
        # convert wherever inspect succeeded (load errors are the same for both), and a sample of the rest
        if result.exit_code == 0 or i % 10 == 0:
            out = tmp_path / f"out{i}"
            cresult, celapsed = _run(["convert", str(path), "-o", str(out)])
            counts["tried"] += 1
            converted += 1
            found += _check(case_id + " (convert)", path, cresult, celapsed, out)
            if cresult.exit_code == 0:
                assert (out / "model.py").exists()
            _tally(counts, cresult, found)
        _tally(counts, result, found)
        problems += found
    with capsys.disabled():
        print(f"\nhostile corpus: {len(cases)} files, {counts['tried']} runs ({converted} convert): "
              f"{counts['ok']} ok, {counts['clean_error']} clean errors, {counts['crash']} crashes")
    assert not problems, "\n".join(problems[:80])
    assert counts["clean_error"] > 250  # the corpus really is damaged
    assert counts["crash"] == 0


def _tally(counts, result, found):
    if result.exit_code == 0:
        counts["ok"] += 1
    elif result.exit_code in (2, 3) and not found:
        counts["clean_error"] += 1
    else:
        counts["crash"] += 1


# ----------------------------------------------------------------------------- specific expectations

def _case(corpus, case_id):
    return dict(corpus[1])[case_id]


@pytest.mark.parametrize("case_id, words", [
    ("w3-external-link", "external link"),
    ("w3-external-link-group", "external link"),
    ("wh5-external-link-cnn", "external link"),
    ("wh5-external-mw-cnn", "external link"),
    ("w3-virtual", "virtual dataset"),
    ("wh5-virtual-cnn", "virtual dataset"),
    ("w3-external-storage", "external files"),
    ("wh5-external-storage-cnn", "external files"),
    ("w3-soft-link", "SoftLink"),
    ("w3-str-dtype", "not a numeric"),
    ("w3-vlen-dtype", "not a numeric"),
    ("w3-object-str", "not a numeric"),
    ("w3-compound-dtype", "not a numeric"),
    ("w3-huge-shape", "tensor limit"),
    ("w3-huge-ratio", "compression ratio"),
    ("zip-bomb-weights", "compression ratio"),
    ("zip-bomb-config", "limit"),
    ("zip-traversal", "path traversal"),
    ("zip-absolute", "absolute path"),
    ("zip-symlink", "symbolic link"),
    ("zip-duplicate", "two members"),
    ("zip-encrypted-flag", "encrypted"),
    ("zip-many", "entries"),
    ("zip-size-lie", "past the end"),
    ("cfg-deep-json", "nested too deeply"),
    ("w3-shape-kernel", "expected (3, 3, 3, 8)"),
    ("w3-shape-dense", "expected (36, 10)"),
    ("w3-shape-bn", "expected (8,)"),
    ("w3-shape-prelu", "expected (1, 1, 8)"),
    ("w3-missing", "missing"),
    ("w3-extra", "unexpected weight"),
    ("wh5-shape-kernel-cnn", "expected (3, 3, 3, 8)"),
    ("wh5-shape-kernel-cnn_k2", "expected (3, 3, 3, 8)"),
    ("wh5-missing-cnn_k2", "missing"),
])
def test_specific_refusals(corpus, case_id, words):
    path = _case(corpus, case_id)
    result, _ = _run(["inspect", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert words in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def test_harmless_damage_still_loads(corpus):
    for case_id in ("zip-deflated-ok", "zip-bzip2", "zip-lzma", "cfg-extra-3"):
        result, _ = _run(["inspect", str(_case(corpus, case_id))])
        assert result.exit_code == 0, (case_id, result.stderr)


def test_weight_mismatch_lists_every_problem(tmp_path):
    def edit(f):
        _replace_ds(f["layers/conv2d/vars"], "0", np.zeros((3, 3, 3, 9), "f4"))
        _replace_ds(f["layers/dense/vars"], "1", np.zeros((11,), "f4"))
        del f["layers/batch_normalization/vars/3"]
    path = _keras_with_weights(FIXTURES / "cnn.keras", tmp_path / "m.keras", edit)
    with pytest.raises(WeightMismatchError) as info:
        kconv.load(path)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert any("'conv2d'" in p and "(3, 3, 3, 9), expected (3, 3, 3, 8)" in p for p in problems)
    assert any("'dense'" in p and "(11,), expected (10,)" in p for p in problems)
    assert any("batch_normalization" in p and "missing" in p for p in problems)
    assert str(path) in str(info.value)


def test_limits_parameter_and_environment(tmp_path):
    path = FIXTURES / "cnn.keras"
    with pytest.raises(ModelFileError, match="config limit|over the 100-byte limit"):
        kconv.load(path, limits=Limits(max_config_bytes=100))
    with pytest.raises(ModelFileError, match="tensor limit"):
        kconv.load(FIXTURES / "cnn.h5", limits=Limits(max_tensor_bytes=64))
    result, _ = _run(["inspect", str(path)], env={"KCONV_MAX_CONFIG_BYTES": "100"})
    assert result.exit_code == 2 and "KCONV_MAX_CONFIG_BYTES" in result.stderr, result.stderr
    result, _ = _run(["inspect", str(path)], env={"KCONV_MAX_MEMBERS": "2"})
    assert result.exit_code == 2 and "entries" in result.stderr, result.stderr
    result, _ = _run(["inspect", str(path)], env={"KCONV_MAX_CONFIG_BYTES": "lots"})
    assert result.exit_code == 2 and "not an integer" in result.stderr, result.stderr
    assert kconv.load(path).total_params > 0  # defaults are back without the variables


# ------------------------------------------------------------------------------------------- Lambda

@pytest.mark.parametrize("name", ["lambda_marker.keras", "lambda_marker.h5"])
def test_lambda_code_is_shown_never_run(name, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("KCONV_HOSTILE_MARKER", str(marker))
    path = HOSTILE / name
    result, _ = _run(["inspect", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "payload (Lambda)" in result.stdout
    assert "[not executed]" in result.stdout
    for word in ("'KCONV_HOSTILE_MARKER'", "'touch'", "'pathlib'"):
        assert word in result.stdout, result.stdout
    rep = json.loads(_run(["inspect", str(path), "--json"])[0].stdout)
    lam = next(ly for ly in rep["layers"] if ly["name"] == "payload")["lambda"]
    assert lam["kind"] == "bytecode" and lam["executed"] is False and lam["code_bytes"] > 100
    assert "touch" in lam["strings"]
    out = tmp_path / "out"
    result, _ = _run(["convert", str(path), "-o", str(out)])
    assert result.exit_code == 3 and "Lambda: payload" in result.stderr, result.stderr
    assert not out.exists()
    assert not marker.exists()


def test_lambda_marker_fixture_is_live():
    """The marker test above can fail: the stored code really does create the marker when run."""
    import base64
    import marshal

    cfg = json.loads(dict(_zip_members(HOSTILE / "lambda_marker.keras"))["config.json"])
    layer = next(ly for ly in cfg["config"]["layers"] if ly["class_name"] == "Lambda")
    code = base64.b64decode(layer["config"]["function"]["config"]["code"])
    # Run it in a child process (the fixture is ours, built by scripts/make_hostile_fixtures.py).
    env = {**os.environ, "KCONV_HOSTILE_MARKER": str(HOSTILE.parent.parent / ".marker-live-check")}
    prog = ("import marshal,sys,types; c=marshal.loads(sys.stdin.buffer.read()); "
            "types.FunctionType(c, {'__builtins__': __builtins__})(1.0)")
    marker = Path(env["KCONV_HOSTILE_MARKER"])
    try:
        proc = subprocess.run([sys.executable, "-c", prog], input=code, env=env, capture_output=True, timeout=30)
        if proc.returncode != 0 and b"bad marshal" in proc.stderr:
            pytest.fail("fixture bytecode is from another Python version: rerun scripts/make_hostile_fixtures.py")
        assert proc.returncode == 0, proc.stderr
        assert marker.exists()
    finally:
        marker.unlink(missing_ok=True)
    del marshal


# ---------------------------------------------------------------------------------- NaN / Inf values

def test_nonfinite_weights_warn(tmp_path):
    src = FIXTURES / "cnn.h5"
    path = _h5_copy(src, tmp_path / "nan.h5", lambda f: _replace_ds(
        f["model_weights/dense/dense"], "bias", np.array([np.nan, np.inf] + [0.0] * 8, "f4")))
    result, _ = _run(["inspect", str(path)])
    assert result.exit_code == 0 and "warning" not in result.stderr  # inspect reads no data by default
    result, _ = _run(["inspect", str(path), "--check-values"])
    assert result.exit_code == 0, result.stderr
    assert "kconv: warning:" in result.stderr and "1 NaN and 1 Inf" in result.stderr, result.stderr
    assert "WARNING: 1 NaN and 1 Inf values" in result.stdout
    rep = json.loads(_run(["inspect", str(path), "--json", "--check-values"])[0].stdout)
    dense = next(ly for ly in rep["layers"] if ly["name"] == "dense")
    assert dense["weights"][1]["nonfinite"] == {"nan": 1, "inf": 1}
    result, _ = _run(["convert", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    assert "kconv: warning:" in result.stderr and "dense/bias" in result.stderr, result.stderr
    with pytest.warns(NonFiniteWeightWarning):
        kconv.convert(path, tmp_path / "out2")


# ------------------------------------------------------------------------- interrupts, determinism

def test_keyboard_interrupt_during_convert_leaves_nothing(tmp_path, monkeypatch):
    import kconv.emit as emit

    def boom(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(emit, "write_weights", boom)
    out = tmp_path / "out"
    result, _ = _run(["convert", str(FIXTURES / "cnn.keras"), "-o", str(out)])
    assert result.exit_code == 130 and "interrupted" in result.stderr, (result.exit_code, result.stderr)
    assert list(tmp_path.iterdir()) == []
    # and an existing earlier output is kept intact
    monkeypatch.undo()
    assert _run(["convert", str(FIXTURES / "cnn.keras"), "-o", str(out)])[0].exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(emit, "write_weights", boom)
    assert _run(["convert", str(FIXTURES / "cnn.keras"), "-o", str(out)])[0].exit_code == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_corpus_conversions_are_deterministic(corpus, tmp_path):
    for case_id in ("zip-deflated-ok", "wh5-nan-cnn"):
        path = _case(corpus, case_id)
        outs = []
        for k in range(2):
            out = tmp_path / f"{case_id}-{k}"
            assert _run(["convert", str(path), "-o", str(out)])[0].exit_code == 0
            outs.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
        assert outs[0] == outs[1]


# ----------------------------------------------------------------------- real processes, memory bound

KCONV = [sys.executable, "-c", "import sys; from kconv.cli import main; sys.argv[0] = 'kconv'; main()"]
SUBPROCESS_CASES = ["zip-bomb-weights", "zip-bomb-config", "w3-huge-shape", "w3-huge-ratio", "trunc-cnn.h5-2048",
                    "cfg-deep-json"]


def test_subprocess_bounded(corpus):
    """A few cases through the real ``kconv`` entry point, under a 1 GiB address-space limit."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    for case_id in SUBPROCESS_CASES:
        path = _case(corpus, case_id)
        t0 = time.monotonic()
        proc = subprocess.run([*KCONV, "inspect", str(path)], capture_output=True,
                              text=True, timeout=60, preexec_fn=limit)
        elapsed = time.monotonic() - t0
        assert proc.returncode == 2, (case_id, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("kconv: error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert elapsed < TIME_BOUND_S, (case_id, elapsed)
    # --traceback shows it
    proc = subprocess.run([*KCONV, "--traceback", "inspect",
                           str(_case(corpus, "zip-traversal"))], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_lambda_summary_keras2_dialect():
    """tf.keras 2 stores a lambda as function = [code, defaults, closure], function_type 'lambda'."""
    from kconv.load.lambdas import describe

    cfg = json.loads(dict(_zip_members(HOSTILE / "lambda_marker.keras"))["config.json"])
    code = next(ly for ly in cfg["config"]["layers"] if ly["class_name"] == "Lambda")["config"]["function"]
    info = describe({"function": [code["config"]["code"], None, [3]], "function_type": "lambda",
                     "output_shape_type": "raw", "arguments": {"k": 1}})
    assert info["kind"] == "bytecode" and "touch" in info["strings"] and info["closure"] == "[3]"
    named = describe({"function": "my_fn", "function_type": "function", "module": "mymod"})
    assert named == {"kind": "named function", "name": "my_fn", "module": "mymod", "note": named["note"],
                     "executed": False}
