"""kconv convert never loses a user's file: it replaces only what it wrote, refuses otherwise (issue 10)."""
from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from kconv.cli import main

CNN = str(FIXTURES / "cnn.h5")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_user_file_in_output_is_refused_then_kept_with_force(tmp_path):
    out = tmp_path / "o"
    assert cli("convert", CNN, "-o", out).exit_code == 0
    (out / "train.py").write_text("my training script\n")
    (out / "finetuned.safetensors").write_bytes(b"precious")
    before = _snapshot(out)
    r = cli("convert", CNN, "-o", out)
    assert r.exit_code == 2, r.output
    assert "train.py" in r.output and "--force" in r.output
    assert _snapshot(out) == before  # nothing touched
    r = cli("convert", CNN, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert (out / "train.py").read_text() == "my training script\n"
    assert (out / "finetuned.safetensors").read_bytes() == b"precious"
    assert {"model.py", "model.safetensors", "kconv.json"} <= set(os.listdir(out))


def test_edited_kconv_file_is_refused_without_force(tmp_path):
    out = tmp_path / "o"
    assert cli("convert", CNN, "-o", out).exit_code == 0
    (out / "model.py").write_text((out / "model.py").read_text() + "# my change\n")
    r = cli("convert", CNN, "-o", out)
    assert r.exit_code == 2 and "edited" in r.output
    assert (out / "model.py").read_text().endswith("# my change\n")
    assert cli("convert", CNN, "-o", out, "--force").exit_code == 0
    assert not (out / "model.py").read_text().endswith("# my change\n")


def test_reconvert_replaces_only_its_files(tmp_path):
    out = tmp_path / "o"
    assert cli("convert", CNN, "-o", out).exit_code == 0
    assert cli("convert", CNN, "-o", out, "--format", "pt").exit_code == 0
    assert sorted(os.listdir(out)) == ["kconv.json", "model.pt", "model.py"]  # the old .safetensors was kconv's
    man = json.loads((out / "kconv.json").read_text())
    assert set(man["files"]) == {"model.py", "model.pt"}


def test_manifest_without_file_list_still_recognised(tmp_path):
    out = tmp_path / "o"
    assert cli("convert", CNN, "-o", out).exit_code == 0
    man = json.loads((out / "kconv.json").read_text())
    del man["files"]  # as written by kconv before it recorded its files
    (out / "kconv.json").write_text(json.dumps(man))
    assert cli("convert", CNN, "-o", out).exit_code == 0


def test_directory_of_other_files_is_refused(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    r = cli("convert", CNN, "-o", ".")
    assert r.exit_code == 2 and "not a kconv output directory" in r.output
    assert os.listdir(tmp_path) == ["notes.txt"]


@pytest.mark.parametrize("pair", [("cnn.h5", "cnn.keras"), ("a/model.keras", "b/model.keras")])
def test_same_stem_refused_before_writing(tmp_path, pair):
    srcs = []
    for rel, fixture in zip(pair, ("cnn.h5", "cnn.keras")):
        p = tmp_path / "in" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((FIXTURES / fixture).read_bytes())
        srcs.append(p)
    r = cli("convert", *srcs, "-o", tmp_path / "out")
    assert r.exit_code == 2 and "same file stem" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["/proc/kconv-x", "FILE/sub"])
def test_unwritable_output_is_exit_2(tmp_path, where):
    if where.startswith("FILE"):
        (tmp_path / "FILE").write_text("a file, not a directory")
        where = str(tmp_path / where)
    r = cli("convert", CNN, "-o", where)
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "choose" in r.output


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_output_permissions_follow_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert cli("convert", CNN, "-o", tmp_path / "o").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o777 & ~umask
    for p in (tmp_path / "o").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name
