"""Benchmarks that compare like with like: Keras, onnxruntime and kconv's PyTorch output, one machine, one run.

    python scripts/bench.py [--quick] [--models A,B|FILE.h5] [--threads 1,all] [--out docs/benchmarks.md]

One run writes ``--out`` (docs/benchmarks.md) with:

- the machine: CPU model, cores, memory, load average, library versions, kconv commit, and how steady
  its speed was: two fixed torch kernels (a 512x512 matmul, compute-bound; a 4M-float add, memory-bound)
  timed at the start and at the end of the run, median and 10th-90th percentile;
- CPU inference of ``--models`` (keras.applications built with ``weights=None`` and
  ``classifier_activation=None``, saved as legacy ``.h5``; a path to a Keras file is used as is) at
  batch 1 and 8, for every thread count of ``--threads``. Each thread count runs in ``--processes``
  processes of its own (default 3, the thread counts alternating), and inside each every runtime has
  that many threads (``tf.config.threading`` intra-op, PyTorch ``set_num_threads``, onnxruntime
  ``intra_op_num_threads``; inter-op pools 1) and the same input array; the runtimes take turns, one
  call each per round, and the medians over the rounds of all the processes are reported, with speed
  ratios against Keras and onnxruntime (and each process's Keras / kconv default at batch 1) and each
  runtime's max abs difference from Keras. Runtimes: Keras/TF ``predict_on_batch`` (warm); onnxruntime
  on tf2onnx's ONNX (the optional ``bench`` extra: "not installed" when it is missing); kconv's default
  output (eager, ``inference_mode``); kconv's optimized output (``kconv.convert(..., optimize=True)``; "n/a" while
  kconv has no such option); kconv + ``torch.compile`` (of the optimized output when there is one);
- with CUDA (``torch.cuda.is_available()``): the same models on the GPU, float32 and bf16 autocast,
  against Keras on the JAX backend, in one process that does not import TensorFlow;
- ``kconv inspect`` against Keras load + ``summary()``, and conversion time and peak RSS, each in a
  fresh process (imports included), for ``--convert-models``;
- the layout operations in each converted forward (``scripts/permute_count.py``, when it exists);
- a recurrent model (Embedding(mask_zero) -> Bidirectional LSTM -> Dense), Keras against kconv.

``--quick`` is a smoke run (first model only, 3 rounds, 1 thread, 1 process, one repetition of the fresh-process
timings, a short recurrent model): it checks that everything runs, its numbers mean nothing.
Worker processes are this script run with ``--worker``. ``KCONV_BENCH_ACCEL=cpu`` runs the
accelerator section on the CPU (tests use it to exercise that path on machines without CUDA).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = "MobileNetV2,EfficientNetB0,ResNet50"
CONVERT_MODELS = "ResNet50,MobileNetV2,VGG16"
BATCHES = (1, 8)
# Column order in the tables and call order within a round.
CPU_RUNTIMES = ("keras", "onnxruntime", "kconv", "kconv_opt", "kconv_freeze", "kconv_freeze_ofi", "kconv_compile")
# The optimized variants the issue #15 targets are read for (the best of them per cell is also reported).
OPT_RUNTIMES = ("kconv_opt", "kconv_freeze", "kconv_freeze_ofi", "kconv_compile")
# glibc malloc tuned for inference, in every CPU inference process (all runtimes in it): by default
# glibc gives freed blocks above its mmap threshold (dynamic, 128 KiB up to 32 MiB) back to the
# kernel and trims the heap top above M_TRIM_THRESHOLD, so each eager call page-faults its activation
# memory in again (worker_alloc measures what that costs). 32 MiB is the largest mmap threshold glibc
# accepts on 64-bit; jemalloc or tcmalloc, which PyTorch's CPU tuning guide recommends, do the same.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}
# rounds per process in the malloc section (3 + 3 processes; ResNet50 at batch 8 under glibc's defaults is slow)
ALLOC_ROUNDS = 7
# calls of each steadiness kernel at the start and at the end of a run (--quick: STEADY_CALLS // 4)
STEADY_CALLS = 80
ACCEL_RUNTIMES = ("keras", "kconv", "kconv_bf16", "kconv_opt", "kconv_opt_bf16")
VERSIONS = ("numpy", "tensorflow", "keras", "torch", "onnxruntime", "onnx", "tf2onnx", "jax", "jaxlib", "h5py")


# ---------------------------------------------------------------------------------------------------
# the parent: prepares files, starts one worker per measurement, writes the markdown


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/benchmarks.md", help="markdown file to write (replaced whole)")
    ap.add_argument("--models", default=DEFAULT_MODELS,
                    help="keras.applications names or paths to Keras files (single input, single output) "
                         f"for the inference tables (default {DEFAULT_MODELS})")
    ap.add_argument("--convert-models", default=None,
                    help=f"models for the inspect and conversion tables (default {CONVERT_MODELS}; "
                         "with --quick: the first of --models)")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts, 'all' = every CPU (default 1,all; with --quick: 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per cell (default 15; --quick: 3)")
    ap.add_argument("--processes", type=int, default=None,
                    help="CPU inference processes per thread count, their calls pooled (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: first model, 3 rounds, 1 thread, 1 process")
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "JOB", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, job, result = args.worker
        res = WORKERS[kind](json.loads(Path(job).read_text()))
        Path(result).write_text(json.dumps(res))
        return
    t_start = time.perf_counter()
    models = [m for m in args.models.split(",") if m]
    if args.quick:
        models = models[:1]
    conv_models = [m for m in (args.convert_models or (models[0] if args.quick else CONVERT_MODELS)).split(",") if m]
    threads = _thread_counts(args.threads or ("1" if args.quick else "1,all"))
    rounds = args.rounds or (3 if args.quick else 15)
    processes = args.processes or (1 if args.quick else 3)
    machine = machine_info()
    # several GB (the models as .h5, ONNX and converted, VGG16 among them): removed however the run ends
    with tempfile.TemporaryDirectory(prefix="kconv_bench_", ignore_cleanup_errors=True) as work:
        tmp = Path(work)
        log(f"working files in {tmp} (removed at the end)")
        steady_job = {"calls": STEADY_CALLS // 4 if args.quick else STEADY_CALLS}
        machine["steady"] = [run_worker("steady", steady_job, tmp, threads=1)]
        log(f"preparing {', '.join(dict.fromkeys(models + conv_models))} (build, save .h5, ONNX, kconv convert)")
        prepared = run_worker("prep", {"models": list(dict.fromkeys(models + conv_models)), "tmp": str(tmp),
                                       "onnx": models}, tmp)
        runs = {n: [] for n in threads}
        for p in range(processes):  # the thread counts alternating: a slow spell of the machine hits each
            for n in threads:
                log(f"CPU inference, {n} thread(s), {rounds} rounds, process {p + 1} of {processes}")
                job = {"threads": n, "models": [prepared[m] for m in models],
                       "batches": [1] if args.quick else list(BATCHES),
                       "rounds": rounds, "warmup": 1 if args.quick else 3}
                runs[n].append(run_worker("infer", job, tmp, threads=n, malloc=MALLOC_TUNED))
        cpu = [merge_processes(runs[n]) for n in threads]
        log("malloc settings: glibc's defaults against MALLOC_TUNED, kconv eager without TensorFlow")
        alloc_job = {"threads": 1, "models": [prepared[m] for m in models],
                     "batches": [1] if args.quick else list(BATCHES),
                     "rounds": min(rounds, ALLOC_ROUNDS), "warmup": 1 if args.quick else 3}
        alloc = {"default": [], "tuned": []}
        for _ in range(1 if args.quick else 3):  # alternating processes: a slow spell of the machine hits both
            alloc["default"].append(run_worker("alloc", alloc_job, tmp, threads=1, malloc=None))
            alloc["tuned"].append(run_worker("alloc", alloc_job, tmp, threads=1, malloc=MALLOC_TUNED))
        accel = None
        accel_device = os.environ.get("KCONV_BENCH_ACCEL") or ("cuda" if _cuda_available() else None)
        if accel_device:
            log(f"{accel_device} inference against Keras on JAX")
            accel = run_worker("accel", {"device": accel_device, "models": [prepared[m] for m in models],
                                         "batches": [1] if args.quick else list(BATCHES), "rounds": rounds,
                                         "warmup": 1 if args.quick else 5}, tmp, malloc=MALLOC_TUNED)
        reps = (1, 1, 1) if args.quick else (15, 3, 2)
        log("inspect and convert in fresh processes")
        plain = plain_python(tmp)
        fresh = [fresh_process_times(prepared[m], tmp, *reps, python=plain) for m in conv_models]
        log("layout operations (scripts/permute_count.py)")
        permutes = permute_section([m for m in models + conv_models if not _is_file(m)], args.quick)
        log("recurrent model")
        rnn = run_worker("rnn", {"threads": 1, "rounds": rounds, "tmp": str(tmp),
                                 "steps": 20 if args.quick else 200, "batches": [1] if args.quick else [1, 32]},
                         tmp, threads=1, malloc=MALLOC_TUNED)
        machine["steady"].append(run_worker("steady", steady_job, tmp, threads=1))
        machine["load_end"] = _loadavg()
        machine["wall"] = time.perf_counter() - t_start
        text = render(machine, args, rounds, cpu, accel, fresh, permutes, rnn, alloc)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    part.write_text(text)
    part.replace(out)
    sys.stdout.write(text)
    log(f"wrote {out} in {machine['wall']:.0f} s")


def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _thread_counts(spec: str) -> list[int]:
    out = []
    for s in spec.split(","):
        n = os.cpu_count() or 1 if s.strip() == "all" else int(s)
        if n not in out:
            out.append(n)
    return out


def _is_file(model: str) -> bool:
    return "/" in model or model.endswith((".h5", ".keras", ".hdf5"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _env(threads: int | None = None, malloc: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(malloc or {})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(threads)
    return env


def run_worker(kind: str, job: dict, tmp: Path, threads: int | None = None, malloc: dict | None = None):
    """Run this script as a worker process (its own thread settings, imports, memory and malloc
    settings); its JSON result."""
    jf, rf = tmp / f"job_{kind}.json", tmp / f"result_{kind}.json"
    jf.write_text(json.dumps(job))
    rf.unlink(missing_ok=True)
    r = subprocess.run([PY, str(Path(__file__).resolve()), "--worker", kind, str(jf), str(rf)],
                       env=_env(threads, malloc),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not rf.exists():
        sys.stderr.write(r.stdout[-6000:])
        raise SystemExit(f"bench: the {kind} worker failed (exit {r.returncode})")
    return json.loads(rf.read_text())


def machine_info() -> dict:
    cpu, physical = platform.processor() or platform.machine(), set()
    try:
        phys_id = "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = (s.strip() for s in line.partition(":"))
            if key == "model name":
                cpu = val
            elif key == "physical id":
                phys_id = val
            elif key == "core id":
                physical.add((phys_id, val))
    except OSError:
        pass
    mem = ""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(ln for ln in meminfo if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    versions = {}
    for pkg in VERSIONS:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    if versions["tensorflow"] == "not installed":
        try:
            versions["tensorflow"] = metadata.version("tensorflow-cpu")
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": cpu, "logical": os.cpu_count(), "physical": len(physical) or None, "mem": mem,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "versions": versions, "commit": commit, "load_start": _loadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ---------------------------------------------------------------------------------------------------
# fresh-process timings: inspect, convert, Keras load


def plain_python(tmp: Path) -> str:
    """A Python for the fresh-process timings that imports this environment's packages without running its
    ``.pth`` files: as kconv installed from a wheel starts. (A development install, ``pip install -e .``, adds
    setuptools' editable-install finder, whose imports cost ~25 ms at every interpreter start.) A venv without
    pip whose one ``.pth`` names this environment's site-packages: directories a ``.pth`` adds are not scanned
    for ``.pth`` files. kconv itself comes from ``PYTHONPATH`` (``_env``), byte-compiled."""
    import sysconfig
    import venv

    env = tmp / "plain_python"
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env)
    py = env / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    Path(site, "kconv_bench_deps.pth").write_text("".join(f"{d}\n" for d in ours))
    return str(py)


def run_timed(code: str, repeat: int, python: str = PY) -> tuple[float, str]:
    """Median wall time of a fresh `python -c code` (import costs included) and its last stdout."""
    times, out = [], ""
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=_env())
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"bench: fresh process failed:\n{code}\n{r.stderr[-3000:]}")
        out = r.stdout
    return statistics.median(times), out


def fresh_process_times(model: dict, tmp: Path, rep_inspect: int, rep_convert: int, rep_keras: int,
                        python: str = PY) -> dict:
    h5 = model["h5"]
    # kconv byte-compiled first, as an installed kconv is (with PYTHONDONTWRITEBYTECODE set and stale or
    # no __pycache__, every run would compile kconv's sources again: about 0.2 s); the command run as
    # the `kconv` console script runs it (kconv.cli.entry)
    import compileall

    compileall.compile_dir(str(ROOT / "kconv"), quiet=1)
    t_inspect, _ = run_timed("import sys; sys.argv=['kconv','inspect',%r,'--json'];"
                             "from kconv.cli import entry\nentry()" % h5, rep_inspect, python)
    keras_pre = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import time, keras;"
    t_keras_summary, _ = run_timed(keras_pre + f"m=keras.saving.load_model({h5!r}, compile=False);"
                                   "m.summary(print_fn=lambda *a, **k: None)", rep_keras, python)
    # Peak RSS from /proc/self/status VmHWM: ru_maxrss survives exec on Linux and would report the
    # parent's peak instead of the child's. Each run converts into a new directory.
    out_dir = Path(tmp) / f"{model['name']}_fresh"
    conv = ("import sys, time; t0=time.perf_counter(); import kconv; t=time.perf_counter();"
            f"kconv.convert({h5!r}, sys.argv[1]); t1=time.perf_counter();"
            "hwm=[ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1];"
            "print(t1-t, t1-t0, int(hwm)/1024)")
    runs = []
    for i in range(rep_convert):
        t = time.perf_counter()
        p = subprocess.Popen([python, "-c", conv, str(out_dir) + str(i)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env())
        tree_peak = _sample_tree_rss(p)
        stdout, stderr = p.communicate()
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"bench: kconv convert {h5} failed:\n{stderr[-3000:]}")
        runs.append((wall, *(float(v) for v in stdout.split()), tree_peak))
    t_kload, out = run_timed(keras_pre + f"t=time.perf_counter(); keras.saving.load_model({h5!r}, compile=False);"
                             "print(time.perf_counter()-t)", rep_keras, python)
    return {"name": model["name"], "mb": Path(h5).stat().st_size / 1e6,
            "weights_mb": model["weights_bytes"] / 1e6,
            "inspect": t_inspect, "keras_summary": t_keras_summary,
            "convert_wall": statistics.median(r[0] for r in runs),
            "convert_call": statistics.median(r[1] for r in runs),
            "rss": statistics.median(r[3] for r in runs), "tree_rss": statistics.median(r[4] for r in runs),
            "keras_load": float(out.split()[-1]),
            "reps": [rep_inspect, rep_convert, rep_keras]}


def _sample_tree_rss(proc: subprocess.Popen, every: float = 0.01) -> float:
    """Peak of the summed RSS (MB) of a process and its descendants (kconv's import-check helper runs
    beside the converting process), sampled until it exits."""
    peak = 0
    while proc.poll() is None:
        total, todo = 0, [proc.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1])
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, StopIteration, ValueError):
                continue  # exited between two reads
        peak = max(peak, total)
        time.sleep(every)
    return peak / 1024


def permute_section(apps: list[str], quick: bool) -> dict:
    script = ROOT / "scripts" / "permute_count.py"
    if not script.exists():
        return {"status": "scripts/permute_count.py is not in this checkout"}
    cmd = [PY, str(script), "--markdown"]  # its own cache of built models (reused between runs)
    if quick:
        if not apps:
            return {"status": "not run (--quick without a keras.applications model)"}
        cmd += ["--models", ",".join(dict.fromkeys(apps))]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    if r.returncode != 0 and "|" not in r.stdout:
        return {"status": f"scripts/permute_count.py failed (exit {r.returncode}): "
                          f"{(r.stderr.strip().splitlines() or [''])[-1]}"}
    return {"table": r.stdout.strip(), "cmd": " ".join(["python", "scripts/permute_count.py", "--markdown"])}


# ---------------------------------------------------------------------------------------------------
# workers (each is a fresh process: `bench.py --worker KIND JOB RESULT`)


def worker_prep(job: dict) -> dict:
    """Build and save the models, convert each with kconv (default and optimized) and with tf2onnx."""
    import inspect

    import keras
    import numpy as np

    import kconv

    tmp = Path(job["tmp"])
    has_optimize = "optimize" in inspect.signature(kconv.convert).parameters
    try:
        import onnx  # noqa: F401
        import tf2onnx
    except ImportError as e:
        tf2onnx, onnx_missing = None, f"not installed ({e.name})"
    out = {}
    for spec in job["models"]:
        if _is_file(spec):
            h5, name = Path(spec).resolve(), Path(spec).stem
        else:
            name, h5 = spec, tmp / f"{spec}.h5"
            built = getattr(keras.applications, spec)(weights=None, classifier_activation=None)
            built.save(h5)
            del built
            keras.backend.clear_session()
        kmodel = keras.saving.load_model(h5, compile=False)
        if len(kmodel.inputs) != 1 or len(kmodel.outputs) != 1:
            raise SystemExit(f"bench: {spec}: only single-input single-output models are benchmarked")
        info = {"name": name, "h5": str(h5), "input_shape": [int(d) for d in kmodel.inputs[0].shape[1:]],
                "weights_bytes": int(sum(np.prod(w.shape) * np.dtype(w.dtype).itemsize for w in kmodel.weights)),
                "kconv": str(kconv.convert(h5, tmp / f"{name}_kconv"))}
        if has_optimize:
            try:
                info["kconv_opt"] = str(kconv.convert(h5, tmp / f"{name}_kconv_opt", optimize=True))
            except Exception as e:  # reported in the table, not hidden
                info["kconv_opt_status"] = f"failed: {type(e).__name__}: {e}"[:200]
        else:
            info["kconv_opt_status"] = "n/a (kconv.convert has no optimize= in this version)"
        if spec in job["onnx"]:
            if tf2onnx is None:
                info["onnx_status"] = onnx_missing
            else:
                t = time.perf_counter()
                try:
                    info["onnx"] = _to_onnx(kmodel, info["input_shape"], tmp / f"{name}.onnx")
                    info["onnx_seconds"] = time.perf_counter() - t
                except Exception as e:
                    info["onnx_status"] = f"tf2onnx failed: {type(e).__name__}: {e}"[:200]
        out[spec] = info
        kmodel = None
        keras.backend.clear_session()
    return out


def _to_onnx(kmodel, shape, path: Path) -> str:
    """tf2onnx's ONNX of a Keras 3 model: through a tf.function (tf2onnx's from_keras expects tf.keras 2)."""
    import tensorflow as tf
    import tf2onnx

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    sig = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
    fn = tf.function(lambda x: kmodel(x, training=False), input_signature=sig).get_concrete_function()
    # Frozen first: tf2onnx's from_function makes a captured constant tensor (EfficientNet's
    # Normalization mean and variance in Keras 3) an input of the ONNX graph instead of a constant.
    frozen = convert_variables_to_constants_v2(fn)
    proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=[t.name for t in frozen.inputs],
                                              output_names=[t.name for t in frozen.outputs], opset=17)
    if len(proto.graph.input) != 1:
        raise ValueError(f"the ONNX graph has {len(proto.graph.input)} inputs")
    path.write_bytes(proto.SerializeToString())
    return str(path)


def _inputs(shape, batch):
    import numpy as np

    return np.random.default_rng(batch).normal(size=(batch, *shape)).astype("float32")


def _measure(fns: dict, statuses: dict, rounds: int, warmup: int, ref_key: str = "keras") -> dict:
    """Warm each runtime up (its first output compared with the reference's), then `rounds` rounds in
    which each runtime is called once, in the order of `fns`. Times in seconds."""
    import numpy as np

    res, outs, live = {}, {}, {}
    for key, fn in fns.items():
        try:
            t = time.perf_counter()
            outs[key] = np.asarray(fn(), dtype=np.float64)
            first = time.perf_counter() - t
            for _ in range(warmup - 1):
                fn()
            live[key] = fn
            res[key] = {"first_call": first, "times": []}
        except Exception as e:  # a runtime that cannot run this model is reported, the others still run
            statuses[key] = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
    for _ in range(rounds):
        for key, fn in live.items():
            t = time.perf_counter()
            fn()
            res[key]["times"].append(time.perf_counter() - t)
    ref = outs.get(ref_key)
    for key, r in res.items():
        r["median"] = statistics.median(r["times"])
        if ref is not None:
            r["max_abs_diff"] = float(np.max(np.abs(outs[key] - ref)))
    for key, s in statuses.items():
        res[key] = {"status": s}
    scale = float(np.max(np.abs(ref))) if ref is not None else None
    return {"runtimes": res, "ref_scale": scale}


def merge_processes(results: list[dict]) -> dict:
    """One thread count's inference processes as one result: per cell and runtime, the median over the timed
    calls of every process (each gives the same number of rounds), the median first call and the largest
    difference from Keras; ``process_medians`` keeps each process's median, for the spread between
    processes. A runtime that failed in any process is reported with its first failure."""
    merged = dict(results[0], rows=[], processes=len(results))
    for rows in zip(*(res["rows"] for res in results)):
        row = dict(rows[0], runtimes={})  # same Keras model, same input: the same reference in every process
        for key in rows[0]["runtimes"]:
            vs = [r["runtimes"].get(key, {"status": "missing in a process"}) for r in rows]
            failed = [v for v in vs if "times" not in v]
            if failed:
                row["runtimes"][key] = failed[0]
                continue
            times = [t for v in vs for t in v["times"]]
            row["runtimes"][key] = {"times": times, "median": statistics.median(times),
                                    "process_medians": [v["median"] for v in vs],
                                    "first_call": statistics.median(v["first_call"] for v in vs)}
            if all("max_abs_diff" in v for v in vs):
                row["runtimes"][key]["max_abs_diff"] = max(v["max_abs_diff"] for v in vs)
        merged["rows"].append(row)
    return merged


def worker_infer(job: dict) -> dict:
    n = job["threads"]
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import torch

    torch.set_num_threads(n)
    torch.set_num_interop_threads(1)
    import kconv

    try:
        import onnxruntime as ort
    except ImportError as e:
        ort, ort_missing = None, f"not installed ({e.name})"
    rows = []
    for m in job["models"]:
        kmodel = keras.saving.load_model(m["h5"], compile=False)
        net = kconv.load_converted(m["kconv"]).eval()
        opt = kconv.load_converted(m["kconv_opt"]).eval() if m.get("kconv_opt") else None
        # freezing: inductor's inference mode (weights become constants, convolutions prepacked for
        # oneDNN with the pointwise ops after them fused in), as README *Serving recipes* compiles. A
        # process-wide setting: torch.compile(options={"freezing": True}) does not reach it (torch 2.13;
        # the weights stay graph inputs and nothing is prepacked).
        torch._inductor.config.freezing = True
        compiled = torch.compile(opt if opt is not None else net, dynamic=False)
        sess = None
        if ort is not None and m.get("onnx"):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n, 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            # onnxruntime's intra-op threads spin after each run and take a core from the runtime called
            # next (measured at 2 threads, ResNet50 batch 1: torch 120 ms after torch, 175 ms right after
            # onnxruntime; 131 ms with spinning off).
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(m["onnx"], so, providers=["CPUExecutionProvider"])
        for batch in job["batches"]:
            x = _inputs(m["input_shape"], batch)
            xt = torch.from_numpy(x)

            def run_torch(module, xt=xt):
                def f():
                    with torch.inference_mode():
                        return module(xt).numpy()
                return f

            statuses = {}
            fns = {"keras": lambda km=kmodel, x=x: km.predict_on_batch(x)}
            if sess is not None:
                fns["onnxruntime"] = lambda s=sess, x=x: s.run(None, {s.get_inputs()[0].name: x})[0]
            else:
                statuses["onnxruntime"] = ort_missing if ort is None else m.get("onnx_status", "no ONNX file")
            fns["kconv"] = run_torch(net)
            if opt is not None:
                fns["kconv_opt"] = run_torch(opt)
            else:
                statuses["kconv_opt"] = m.get("kconv_opt_status", "n/a")
            # one trace per batch size, as one compiled graph per batch size (dynamic=False); a trace of
            # its own for each: optimize_for_inference rewrites the module it is given
            for key, ofi in (("kconv_freeze", False), ("kconv_freeze_ofi", True)):
                try:
                    with torch.no_grad():
                        frozen = torch.jit.freeze(torch.jit.trace(opt if opt is not None else net, xt))
                        frozen = torch.jit.optimize_for_inference(frozen) if ofi else frozen
                    fns[key] = run_torch(frozen)
                except Exception as e:  # reported in the table, not hidden
                    first_line = str(e).splitlines()[0] if str(e) else ""
                    statuses[key] = f"failed: {type(e).__name__}: {first_line}"[:160]
            fns["kconv_compile"] = run_torch(compiled)
            r = _measure(fns, statuses, job["rounds"], job["warmup"])
            r.update(model=m["name"], batch=batch, threads=n, shape=m["input_shape"],
                     compiled_optimized=opt is not None)
            rows.append(r)
            log(f"  {m['name']} batch {batch}: " + ", ".join(
                f"{k} {v['median'] * 1e3:.1f} ms" for k, v in r["runtimes"].items() if "median" in v))
        kmodel = net = opt = compiled = frozen = sess = None
        keras.backend.clear_session()
        torch._dynamo.reset()
    return {"threads": n, "rows": rows, "torch_threads": torch.get_num_threads(),
            "tf_intra": tf.config.threading.get_intra_op_parallelism_threads()}


def worker_accel(job: dict) -> dict:
    """Keras on the JAX backend against the converted model on one device, in a process without TensorFlow."""
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch too
    dev = job["device"]
    import jax
    import keras
    import torch

    import kconv

    jax_platform = jax.devices()[0].platform
    keras_status = None
    if dev != "cpu" and jax_platform == "cpu":
        keras_status = "JAX has no GPU here (install jax with its CUDA plugin)"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    rows = []
    for m in job["models"]:
        kmodel = keras.saving.load_model(m["h5"], compile=False) if keras_status is None else None
        net = kconv.load_converted(m["kconv"], device=dev).eval()
        opt = kconv.load_converted(m["kconv_opt"], device=dev).eval() if m.get("kconv_opt") else None
        for batch in job["batches"]:
            x = _inputs(m["input_shape"], batch)

            def run_torch(module, bf16=False, x=x):
                # numpy in, numpy out, as predict_on_batch: host-device copies are timed for both
                def f():
                    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
                        y = module(torch.from_numpy(x).to(dev)).float().cpu().numpy()
                    sync()
                    return y
                return f

            statuses, fns = {}, {}
            if kmodel is not None:
                fns["keras"] = lambda km=kmodel, x=x: km.predict_on_batch(x)
            else:
                statuses["keras"] = keras_status
            fns["kconv"], fns["kconv_bf16"] = run_torch(net), run_torch(net, True)
            if opt is not None:
                fns["kconv_opt"], fns["kconv_opt_bf16"] = run_torch(opt), run_torch(opt, True)
            else:
                statuses["kconv_opt"] = statuses["kconv_opt_bf16"] = m.get("kconv_opt_status", "n/a")
            r = _measure(fns, statuses, job["rounds"], job["warmup"])
            r.update(model=m["name"], batch=batch)
            rows.append(r)
        kmodel = net = opt = None
        keras.backend.clear_session()
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{dev} (KCONV_BENCH_ACCEL)"
    return {"device": name, "jax_platform": jax_platform, "rows": rows}


def worker_alloc(job: dict) -> dict:
    """kconv default and optimized, eager, in a process without TensorFlow (as a torch-only serving
    process runs them) under this process's malloc settings: medians and minor page faults per call."""
    import resource

    import torch

    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    import kconv

    rows = []
    for m in job["models"]:
        nets = {"kconv": kconv.load_converted(m["kconv"]).eval()}
        if m.get("kconv_opt"):
            nets["kconv_opt"] = kconv.load_converted(m["kconv_opt"]).eval()
        for batch in job["batches"]:
            xt = torch.from_numpy(_inputs(m["input_shape"], batch))
            times = {k: [] for k in nets}
            faults = {k: [] for k in nets}
            with torch.inference_mode():
                for net in nets.values():
                    for _ in range(job["warmup"]):
                        net(xt)
                for _ in range(job["rounds"]):
                    for key, net in nets.items():
                        f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
                        net(xt)
                        times[key].append(time.perf_counter() - t)
                        faults[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            rows.append({"model": m["name"], "batch": batch, "runtimes": {
                k: {"median": statistics.median(times[k]), "faults": statistics.median(faults[k])} for k in nets}})
    return {"rows": rows, "rounds": job["rounds"]}


def worker_rnn(job: dict) -> dict:
    """Embedding(mask_zero) -> Bidirectional(LSTM) -> Dense: Keras/TF against kconv, masked batches."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    torch.set_num_interop_threads(1)
    import kconv

    steps, vocab, dim, units = job["steps"], 5000, 64, 64
    L = keras.layers
    inp = keras.Input((None,), dtype="int32")
    h = L.Embedding(vocab, dim, mask_zero=True)(inp)
    h = L.Bidirectional(L.LSTM(units))(h)
    model = keras.Model(inp, L.Dense(2, activation="softmax")(h))
    tmp = Path(job["tmp"])
    model.save(tmp / "rnn.keras")
    net = kconv.load_converted(kconv.convert(tmp / "rnn.keras", tmp / "rnn_kconv")).eval()
    rng = np.random.default_rng(0)
    rows = []
    for batch in job["batches"]:
        for kind in ("right-padded", "gappy"):
            ids = rng.integers(1, vocab, size=(batch, steps)).astype("int32")
            lengths = rng.integers(steps // 2, steps + 1, size=batch)
            lengths[0] = steps
            for i, n in enumerate(lengths):
                ids[i, n:] = 0
            if kind == "gappy":
                ids[:, 10::7] = 0
            xt = torch.from_numpy(ids)

            def run_net(xt=xt):
                with torch.inference_mode():
                    return net(xt).numpy()

            r = _measure({"keras": lambda ids=ids: model.predict_on_batch(ids), "kconv": run_net}, {},
                         job["rounds"], 2)
            r.update(batch=batch, mask=kind)
            rows.append(r)
    return {"rows": rows, "steps": steps, "vocab": vocab, "dim": dim, "units": units, "threads": job["threads"]}


def worker_steady(job: dict) -> dict:
    """How steady the machine's speed is now: two fixed torch kernels at 1 thread, alternating, each
    timed ``calls`` times after a warm-up. A 512x512 float32 matmul (compute) and ``a + b`` into a
    preallocated output over 4M floats (48 MB moved: memory bandwidth). Times in seconds."""
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    a, b, c = torch.randn(2**22, generator=g), torch.randn(2**22, generator=g), torch.empty(2**22)
    kernels = {"matmul": lambda: torch.mm(m1, m2), "add": lambda: torch.add(a, b, out=c)}
    times = {k: [] for k in kernels}
    for _ in range(5):
        for fn in kernels.values():
            fn()
    for _ in range(job["calls"]):
        for k, fn in kernels.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


WORKERS = {"prep": worker_prep, "steady": worker_steady, "infer": worker_infer, "accel": worker_accel,
           "alloc": worker_alloc, "rnn": worker_rnn}


# ---------------------------------------------------------------------------------------------------
# markdown


def _mb(mb: float) -> str:
    return f"{mb:.0f} MB" if mb >= 10 else f"{mb:.2g} MB"


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.1f} s"


def _cell(r: dict, key: str, refs: tuple[str, ...] = ("keras", "onnxruntime")) -> str:
    v = r["runtimes"].get(key, {"status": "not run"})
    if "median" not in v:
        return v["status"]
    parts = []
    for ref, label in (("keras", "Keras"), ("onnxruntime", "ORT")):
        rv = r["runtimes"].get(ref, {})
        if ref in refs and ref != key and "median" in rv:
            parts.append(f"{rv['median'] / v['median']:.2f}× {label}")
    return _ms(v["median"]) + (f" ({', '.join(parts)})" if parts else "")


def _diff(r: dict, key: str, relative: bool = True) -> str:
    """Max abs difference from the reference, divided by the reference's largest magnitude (random-weight
    networks can output 1e-11: the absolute difference alone would say nothing)."""
    v = r["runtimes"].get(key, {})
    if "max_abs_diff" not in v:
        return "–"
    scale = r.get("ref_scale") or 0.0
    return f"{v['max_abs_diff'] / scale:.1e}" if relative and scale > 0 else f"{v['max_abs_diff']:.1e}"


CPU_HEAD = {"keras": "Keras/TF `predict_on_batch`", "onnxruntime": "onnxruntime (tf2onnx)",
            "kconv": "kconv default (eager)", "kconv_opt": "kconv optimized", "kconv_freeze": "kconv + jit.freeze",
            "kconv_freeze_ofi": "kconv + jit.freeze + optimize_for_inference", "kconv_compile": "kconv + torch.compile"}
ACCEL_HEAD = {"keras": "Keras/JAX `predict_on_batch`", "kconv": "kconv float32", "kconv_bf16": "kconv bf16 autocast",
              "kconv_opt": "kconv optimized float32", "kconv_opt_bf16": "kconv optimized bf16 autocast"}


def render(machine, args, rounds, cpu, accel, fresh, permutes, rnn, alloc=None) -> str:
    v = machine["versions"]
    cmd = "python scripts/bench.py" + ("" if args.out == "docs/benchmarks.md" else f" --out {args.out}") + "".join(
        f" {a}" for a in sys.argv[1:] if a not in ("--out", args.out))
    lines = ["# Benchmarks", "",
             f"Generated by `{cmd}` on {machine['date']} in {machine['wall'] / 60:.0f} min "
             f"(kconv `{machine['commit']}`). Every number below comes from that one run; do not edit by hand.", "",
             "## Machine", "",
             f"- CPU: {machine['cpu']}, {machine['logical']} logical CPUs"
             + (f" ({machine['physical']} cores)" if machine["physical"] else "")
             + (f", {machine['mem']} memory" if machine["mem"] else ""),
             f"- load average (1, 5, 15 min) at start {machine['load_start']}, at end {machine['load_end']}",
             *steady_lines(machine.get("steady")),
             f"- {machine['os']}, Python {machine['python']}",
             "- " + ", ".join(f"{k} {v[k]}" for k in VERSIONS), ""]
    compiled_opt = any(r.get("compiled_optimized") for c in cpu for r in c["rows"])
    procs = max((c.get("processes", 1) for c in cpu), default=1)
    lines += ["## Inference on CPU", "",
              "Models: keras.applications with `weights=None` (random weights) and `classifier_activation=None` "
              "(logits, so the differences below are not hidden by a softmax), saved as legacy `.h5` (a model "
              "given as a file is used as it is); "
              "inputs: " + ", ".join(sorted({f"{r['model']} {'x'.join(map(str, r['shape']))}"
                                            for c in cpu for r in c["rows"]}))
              + " (batch x height x width x channels without the batch), float32 normal noise, the same "
              "array for every runtime.",
              "",
              (f"Each thread count runs in {procs} processes of its own (the thread counts alternating), and in each "
               if procs > 1 else "Each thread count runs in its own process, and in it ")
              + "every runtime gets that many threads: "
              "`tf.config.threading` intra-op = N, `torch.set_num_threads(N)`, onnxruntime "
              "`intra_op_num_threads=N` with spinning off; inter-op pools 1 (onnxruntime sequential). "
              f"After warm-up calls, {rounds} rounds in which each runtime is called once, in column order; "
              + (f"the cell is the median over the {procs * rounds} calls of the {procs} processes (the same "
                 "runtime's median moves by up to about 10% from one process to the next on a noisy machine). "
                 if procs > 1 else "the cell is the median over the rounds. ")
              + "`(a× Keras, b× ORT)`: Keras's (onnxruntime's) median "
              "divided by this one, so above 1 is faster than Keras (onnxruntime), below 1 slower. The process "
              "runs with glibc's malloc tuned for inference ("
              + ", ".join(f"`{k}={v}`" for k, v in MALLOC_TUNED.items())
              + ", for every runtime in it): with glibc's defaults a torch-only process page-faults its "
              "activations in on every call (see *malloc settings* below).", "",
              "Runtimes: Keras 3 on TensorFlow, `model.predict_on_batch(x)` (a compiled `tf.function`); "
              "onnxruntime `CPUExecutionProvider` on the ONNX that tf2onnx makes of the same Keras model "
              "(opset 17); kconv default = `kconv convert` output, eager, under `torch.inference_mode()`; "
              "kconv optimized = `kconv.convert(..., optimize=True)`; kconv + jit.freeze = "
              + ("the optimized module" if compiled_opt else "the default module")
              + " through `torch.jit.freeze(torch.jit.trace(...))`, one trace per batch size; kconv + jit.freeze "
              "+ optimize_for_inference = the same through `torch.jit.optimize_for_inference(...)` as well (a trace "
              "of its own); kconv + torch.compile = the same module through "
              "`torch.compile(dynamic=False)` (inductor) with `torch._inductor.config.freezing = True`, "
              "compilation excluded.",
              "",
              "| model | batch | threads | " + " | ".join(CPU_HEAD[k] for k in CPU_RUNTIMES) + " |",
              "|---|---|---|" + "---|" * len(CPU_RUNTIMES)]
    for c in cpu:
        for r in c["rows"]:
            lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | "
                         + " | ".join(_cell(r, k) for k in CPU_RUNTIMES) + " |")
    lines += ["", "Max abs difference from Keras's output on the same input, divided by the largest |Keras output| "
              "(random weights make small logits, so the absolute difference alone would say little):", "",
              "| model | batch | threads | largest \\|Keras\\| | " + " | ".join(CPU_HEAD[k] for k in CPU_RUNTIMES[1:])
              + " |", "|---|---|---|---|" + "---|" * (len(CPU_RUNTIMES) - 1)]
    for c in cpu:
        for r in c["rows"]:
            lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['ref_scale']:.2g} | "
                         + " | ".join(_diff(r, k) for k in CPU_RUNTIMES[1:]) + " |")
    first = {}
    for c in cpu:
        for r in c["rows"]:
            for k in ("onnxruntime", "kconv_compile"):
                f = r["runtimes"].get(k, {}).get("first_call")
                if f is not None:
                    first.setdefault(k, {})[(r["model"], r["batch"])] = f
    if first.get("kconv_compile"):
        lines += ["", "First call of the compiled module (compilation), per model and batch: " + ", ".join(
            f"{m} b{b} {t:.0f} s" for (m, b), t in first["kconv_compile"].items()) + "."]
    lines += ["", *targets(cpu), "",
              "Where the time goes in these cells, what was changed for them and what is left: "
              "[cpu-inference.md](cpu-inference.md) (hand-written notes, not regenerated)."]
    if alloc:
        lines += ["", *alloc_section(alloc)]
    lines += ["", "## Inference on an accelerator", ""]
    if accel is None:
        lines += ["Not measured: no CUDA device on this machine (`torch.cuda.is_available()` is false). On a machine "
                  "with one, this section compares the converted model in float32 and under bf16 autocast with "
                  "Keras on the JAX backend (a process without TensorFlow)."]
    else:
        lines += [f"Device: {accel['device']}; Keras 3 on JAX ({accel['jax_platform']}), `predict_on_batch`. "
                  f"Same protocol as above ({rounds} interleaved rounds, medians); both sides take a numpy batch "
                  "and return numpy, so host-device copies are timed for each. `(a× Keras)`: Keras's median / "
                  "this one.", "",
                  "| model | batch | " + " | ".join(ACCEL_HEAD[k] for k in ACCEL_RUNTIMES) + " |",
                  "|---|---|" + "---|" * len(ACCEL_RUNTIMES)]
        for r in accel["rows"]:
            lines.append(f"| {r['model']} | {r['batch']} | "
                         + " | ".join(_cell(r, k, ("keras",)) for k in ACCEL_RUNTIMES) + " |")
        lines += ["", "Max abs difference from Keras/JAX's output, divided by the largest |Keras output|:", "",
                  "| model | batch | largest \\|Keras\\| | " + " | ".join(ACCEL_HEAD[k] for k in ACCEL_RUNTIMES[1:])
                  + " |", "|---|---|---|" + "---|" * (len(ACCEL_RUNTIMES) - 1)]
        for r in accel["rows"]:
            scale = f"{r['ref_scale']:.2g}" if r["ref_scale"] is not None else "–"
            lines.append(f"| {r['model']} | {r['batch']} | {scale} | "
                         + " | ".join(_diff(r, k) for k in ACCEL_RUNTIMES[1:]) + " |")
    lines += ["", "## `kconv inspect` vs Keras load + summary()", "",
              "Fresh process each time (import costs included); median of "
              f"{fresh[0]['reps'][0] if fresh else 0} (Keras: {fresh[0]['reps'][2] if fresh else 0}). These and the "
              "conversion processes start as an installed kconv does: the benchmark's interpreter without the "
              "`.pth` files of its environment (a development install's editable-install finder, about 25 ms "
              "of imports at each start, is not loaded; a wheel install has none).", "",
              "| model | file | kconv inspect --json | Keras load_model + summary | ratio |", "|---|---|---|---|---|"]
    for f in fresh:
        lines.append(f"| {f['name']} | {_mb(f['mb'])} | {f['inspect']:.2f} s | {f['keras_summary']:.2f} s | "
                     f"{f['keras_summary'] / f['inspect']:.1f}× faster |")
    lines += ["", "## Conversion time and peak memory", "",
              "`kconv.convert` of the `.h5` in a fresh process, median of "
              f"{fresh[0]['reps'][1] if fresh else 0}: wall time of the whole process (imports included), time "
              "inside the call; peak RSS of the converting process (`VmHWM`; `ru_maxrss` is inherited across "
              "`exec`) and of the whole process tree (the process and any helper it starts, such as kconv's "
              "import check, summed, sampled every 10 ms), also as multiples of the weights' size; Keras: time "
              "inside `load_model` after importing keras.", "",
              "| model | weights | kconv process wall | inside `kconv.convert` | peak RSS (process) | "
              "peak RSS (process tree) | RSS / weights (process, tree) | Keras load_model |",
              "|---|---|---|---|---|---|---|---|"]
    for f in fresh:
        w = f["weights_mb"]
        lines.append(f"| {f['name']} | {_mb(w)} | {f['convert_wall']:.2f} s | {f['convert_call']:.2f} s | "
                     f"{f['rss']:.0f} MB | {f['tree_rss']:.0f} MB | {f['rss'] / w:.2f}×, {f['tree_rss'] / w:.2f}× | "
                     f"{f['keras_load']:.2f} s |")
    lines += ["", "## Layout operations in the converted forward", ""]
    if "table" in permutes:
        lines += [f"From `{permutes['cmd']}` (its own input sizes; counts, not times). Why the counts are what "
                  "they are, and what was measured when they changed: [layout.md](layout.md).", "", permutes["table"]]
    else:
        lines.append(permutes["status"] + ".")
    lines += ["", "## Recurrent model inference on CPU", "",
              f"`Embedding({rnn['vocab']}, {rnn['dim']}, mask_zero=True)` -> `Bidirectional(LSTM({rnn['units']}))` "
              f"-> `Dense(2, softmax)`, {rnn['steps']} steps, random weights, {rnn['threads']} thread, "
              f"{rounds} interleaved rounds, medians. Right-padded: lengths between {rnn['steps'] // 2} and "
              f"{rnn['steps']}; gappy: also holes inside the sequences. Every masked batch runs kconv's per-step "
              "loop (exact Keras semantics for any mask).", "",
              "| batch | mask | Keras/TF `predict_on_batch` | kconv | max abs diff |", "|---|---|---|---|---|"]
    for r in rnn["rows"]:
        lines.append(f"| {r['batch']} | {r['mask']} | {_cell(r, 'keras')} | {_cell(r, 'kconv')} | "
                     f"{_diff(r, 'kconv', relative=False)} |")
    lines += ["", "## Reproducing", "",
              "The onnxruntime column needs the optional `bench` extra (onnxruntime, onnx, tf2onnx, versions "
              "pinned in `.ci/constraints.txt`): `pip install -c .ci/constraints.txt -e '.[keras,bench]'`. "
              "tf2onnx 1.17 asks for `protobuf>=3.20` only, so it installs beside TensorFlow 2.21's protobuf 7 "
              "without a conflict. The script freezes the Keras 3 model's `tf.function` "
              "(`convert_variables_to_constants_v2`) and converts that graph with `tf2onnx.convert.from_graph_def` "
              "(`from_keras` expects tf.keras 2, and `from_function` leaves EfficientNet's Normalization "
              "constants as extra graph inputs). Without the extra the "
              "column says \"not installed\". Then `python scripts/bench.py` (33-46 minutes on 2 cores, "
              "much of it torch.compile's "
              "first calls, one per model, batch and thread count: inductor's cache is keyed on the thread "
              "count); "
              "`--quick` is a smoke run whose numbers mean nothing. Run it on an idle machine: on 2 cores "
              "another process moves the medians by tens of percent (the load averages above say how idle "
              "this run was)."]
    return "\n".join(lines) + "\n"


def _spread(times: list[float]) -> str:
    q = statistics.quantiles(times, n=10, method="inclusive")
    return f"{statistics.median(times) * 1e3:.2f} ms ({q[0] * 1e3:.2f}-{q[-1] * 1e3:.2f})"


def steady_lines(steady: list[dict] | None) -> list[str]:
    """The Machine section's steadiness line: each kernel's median and 10th-90th percentile, at the
    start and at the end of the run."""
    if not steady:
        return []
    when = ("at start", "at end")
    parts = [f"{w} " + ", ".join(f"{k} {_spread(v)}" for k, v in s.items()) for w, s in zip(when, steady)]
    return [f"- steadiness (torch, 1 thread, {len(steady[0]['matmul'])} calls of each kernel, alternating: "
            "a 512x512 float32 matmul and a 4M-float add, median and in brackets the 10th-90th percentile): "
            + "; ".join(parts) + ". The wider the brackets, or the further apart start and end, the more the "
            "machine's speed moved during the run (other work on the host), and the less a difference of a few "
            "percent between two cells or two runs means"]


def alloc_section(alloc: dict) -> list[str]:
    """glibc's malloc defaults against MALLOC_TUNED: per model, batch and runtime, the median over the
    alternating processes of each process's median, and minor page faults per call."""
    n = len(alloc["default"])
    out = ["### malloc settings", "",
           "kconv's default and optimized output, eager, 1 thread, in a process that imports torch and kconv "
           "only (as a torch-only serving process), once with glibc's malloc defaults and once with "
           + ", ".join(f"`{k}={v}`" for k, v in MALLOC_TUNED.items())
           + f": {n} process(es) of each, alternating, {alloc['default'][0].get('rounds', '?')} rounds in each; "
           "the cell is the median of the processes' medians, with "
           "the minor page faults of one call (`ru_minflt`, median). With the defaults glibc returns freed "
           "activation memory to the kernel (blocks above its dynamic mmap threshold, and the heap top above "
           "M_TRIM_THRESHOLD), and every call faults it in again, zeroed, page by page; the tuned settings "
           "keep it in the heap. `LD_PRELOAD` of jemalloc or tcmalloc (PyTorch's CPU tuning guide) has the "
           "same effect. Not a kconv setting: the serving process's environment (README *Fast inference on "
           "CPU*).", "",
           "| model | batch | output | glibc defaults | tuned | speed-up |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(alloc["default"][0]["rows"]):
        for key in r["runtimes"]:
            cells = {}
            for mode in ("default", "tuned"):
                rs = [run["rows"][i]["runtimes"][key] for run in alloc[mode]]
                cells[mode] = (statistics.median(x["median"] for x in rs), statistics.median(x["faults"] for x in rs))
            (d, df), (t, tf) = cells["default"], cells["tuned"]
            label = "default" if key == "kconv" else "optimized"
            out.append(f"| {r['model']} | {r['batch']} | {label} | {_ms(d)}, {df:.0f} faults | {_ms(t)}, "
                       f"{tf:.0f} faults | {d / t:.2f}× |")
    return out


def targets(cpu) -> list[str]:
    """Issue #15's targets, read off the table: optimized >= Keras and within 1.5x of onnxruntime's latency
    in every cell, default >= Keras at batch 1. "Optimized" is checked twice: the optimized output as it
    is (eager), and the fastest of the optimized variants (eager, jit.freeze with and without
    optimize_for_inference, torch.compile) in the cell."""
    out = ["Targets (issue #15), from the table above:", ""]
    misses, checked, best_cells, best_missed, spread = [], 0, 0, False, []
    for c in cpu:
        for r in c["rows"]:
            rt = r["runtimes"]
            where = f"{r['model']} batch {r['batch']}, {r['threads']} thread(s)"
            k, o = rt["keras"].get("median"), rt.get("onnxruntime", {}).get("median")
            opt = rt.get("kconv_opt", {}).get("median")
            variants = {key: rt[key]["median"] for key in OPT_RUNTIMES if "median" in rt.get(key, {})}
            best = min(variants, key=variants.get) if opt is not None and len(variants) > 1 else None
            for label, t in (("optimized", opt), (f"fastest optimized variant ({CPU_HEAD[best]})" if best else "",
                                                  variants.get(best))):
                if t is None or k is None:
                    continue
                checked += 1
                n_before = len(misses)
                if t > k:
                    misses.append(f"{label} slower than Keras at {where} ({_ms(t)} vs {_ms(k)})")
                if o is not None and t > 1.5 * o:
                    misses.append(f"{label} more than 1.5× onnxruntime's latency at {where} ({t / o:.2f}×)")
                if label != "optimized":
                    best_cells += 1
                    best_missed |= len(misses) > n_before
            d = rt.get("kconv", {}).get("median")
            if r["batch"] == 1 and d is not None and k is not None:
                checked += 1
                if d > k:
                    misses.append(f"default slower than Keras at {where} ({_ms(d)} vs {_ms(k)})")
                pk, pd = rt["keras"].get("process_medians", []), rt["kconv"].get("process_medians", [])
                if len(pk) > 1 and len(pk) == len(pd):
                    spread.append(f"{r['model']} {r['threads']} thread(s) "
                                  + ", ".join(f"{a / b:.2f}×" for a, b in zip(pk, pd)))
    if not any("median" in r["runtimes"].get("kconv_opt", {}) for c in cpu for r in c["rows"]):
        out.append("- the optimized path was not measured (see its column), so its targets are not checked")
    ort_measured = any("median" in r["runtimes"].get("onnxruntime", {}) for c in cpu for r in c["rows"])
    if not ort_measured:
        out.append("- onnxruntime was not measured (see its column), so the 1.5× target is not checked")
    if best_cells and not best_missed:
        out.append("- met: the fastest optimized variant is at or faster than Keras"
                   + (" and within 1.5× of onnxruntime" if ort_measured else "")
                   + f" in every cell ({best_cells} cells)")
    out += [f"- missed: {m}" for m in misses] or [f"- every checked cell meets its target ({checked} checks)"]
    if spread:
        out.append("- the default against Keras at batch 1 in each process (Keras's median / the default's): "
                   + "; ".join(spread))
    return out


if __name__ == "__main__":
    main()
