"""Whole-process figures of ``kconv convert`` and ``kconv inspect`` (issue #15), for scripts/bench.py.

    python scripts/measure_convert.py MODEL.h5 [--repeat 5]

``measure_convert(h5, out_root, repeat)`` runs ``kconv convert H5 -o DIR`` in fresh processes and
returns medians of: ``wall`` (the command from start to exit: imports, the helper process that
imports torch for the import check, the exit that waits for it), ``rss`` (peak resident memory of
the converting process, ``VmHWM``) and ``rss_helper`` (the helper's, read while it is still alive;
the two run at the same time, so their sum bounds the memory used at once). ``ru_maxrss`` is not
used: it survives ``exec`` and would report the (TensorFlow-laden) benchmark process's peak.
``measure_inspect(h5, repeat)``: median wall of ``kconv inspect H5`` in fresh processes.

kconv's modules are byte-compiled first (``compileall``): with ``PYTHONDONTWRITEBYTECODE`` set and no
``__pycache__``, every run would compile kconv's source again (about 0.2 s on 2 cores), which an
installed kconv never does.
"""
from __future__ import annotations

import argparse
import compileall
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAUNCH = r"""
import sys
from kconv.cli import main
from kconv.emit import checker

def hwm(pid="self"):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0.0

sys.argv = ["kconv", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
helper = checker._helper
print(json.dumps({"code": code, "rss": hwm(), "rss_helper": hwm(helper.pid) if helper else 0.0}),
      file=sys.stderr)
"""


def _compile():
    compileall.compile_dir(str(ROOT / "kconv"), quiet=1)


def measure_convert(h5, out_root=None, repeat: int = 5, env=None) -> dict:
    _compile()
    out_root = Path(out_root or tempfile.mkdtemp(prefix="kconv-measure-"))
    walls, rss, helper = [], [], []
    for i in range(repeat):
        out = out_root / f"run{i}"
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", "import json\n" + LAUNCH, "convert", str(h5), "-o", str(out)],
                           capture_output=True, text=True, env=env)
        walls.append(time.perf_counter() - t)
        rep = json.loads(r.stderr.strip().splitlines()[-1])
        if rep["code"] not in (0, None):
            raise SystemExit(f"kconv convert {h5} failed:\n{r.stderr[-3000:]}")
        rss.append(rep["rss"])
        helper.append(rep["rss_helper"])
    return {"wall": statistics.median(walls), "rss": statistics.median(rss), "rss_helper": statistics.median(helper),
            "runs": repeat}


def measure_inspect(h5, repeat: int = 5, env=None) -> float:
    _compile()
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kconv", "inspect", str(h5)], capture_output=True, env=env, check=True)
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    conv = measure_convert(args.model, repeat=args.repeat)
    print(f"convert: wall {conv['wall']:.2f} s, peak RSS {conv['rss']:.0f} MiB "
          f"(+ helper {conv['rss_helper']:.0f} MiB), median of {args.repeat}")
    print(f"inspect: wall {measure_inspect(args.model, args.repeat):.2f} s, median of {args.repeat}")


if __name__ == "__main__":
    main()
