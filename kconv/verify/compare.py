"""Numerical comparison of a torch result against the Keras reference (numpy only).

An element agrees when ``|torch - keras| <= atol + rtol * |keras|`` (numpy ``allclose`` with Keras as
the reference); NaN agrees only with NaN, inf only with the same inf. Reported per tensor:

- ``max_abs_err``: max ``|torch - keras|``;
- ``max_rel_err``: max ``|torch - keras| / max(|keras|, atol)`` (relative to the reference, floored at
  ``atol`` so that values near zero do not blow it up);
- ``err_ratio``: max ``|torch - keras| / (atol + rtol * |keras|)``: at most 1 where the tensor agrees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4


@dataclass
class Comparison:
    name: str
    shape: list
    max_abs_err: float
    max_rel_err: float
    err_ratio: float
    passed: bool
    problem: str = ""  # shape or dtype mismatch, NaN where the reference has none
    worst_index: list | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("max_abs_err", "max_rel_err", "err_ratio"):
            d[k] = _json_float(d[k])
        return d


def _json_float(x: float):
    if x is None or np.isfinite(x):
        return x
    return "inf" if x > 0 else ("nan" if np.isnan(x) else "-inf")


def compare(name: str, expected, got, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> Comparison:
    e = np.asarray(expected)
    g = np.asarray(got)
    if e.shape != g.shape:
        return Comparison(name, list(e.shape), float("inf"), float("inf"), float("inf"), False,
                          f"shape {tuple(g.shape)} from torch, Keras gives {tuple(e.shape)}")
    if e.size == 0:
        return Comparison(name, list(e.shape), 0.0, 0.0, 0.0, True)
    if e.dtype.kind not in "fc" and g.dtype.kind not in "fc":  # ints, bools: exact
        diff = np.abs(e.astype(np.float64) - g.astype(np.float64))
        bad = diff > 0
        worst = int(np.argmax(diff))
        return Comparison(name, list(e.shape), float(diff.max()), float((diff / np.maximum(np.abs(e), 1)).max()),
                          float("inf") if bad.any() else 0.0, not bad.any(), "" if not bad.any() else "integers differ",
                          [int(i) for i in np.unravel_index(worst, e.shape)])
    e64 = e.astype(np.float64)
    g64 = g.astype(np.float64)
    same_special = (np.isnan(e64) & np.isnan(g64)) | (np.isinf(e64) & (e64 == g64))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same_special, 0.0, np.abs(g64 - e64))
    diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only: infinitely wrong
    ref = np.where(np.isfinite(e64), np.abs(e64), 0.0)
    tol = atol + rtol * ref
    ratio = diff / np.maximum(tol, np.finfo(np.float64).tiny)
    rel = diff / np.maximum(ref, max(atol, np.finfo(np.float64).tiny))
    worst = int(np.argmax(ratio))
    passed = bool((diff <= tol).all())
    problem = ""
    if np.isnan(g64).sum() > np.isnan(e64).sum():
        problem = "NaN in the torch output"
    return Comparison(name, list(e.shape), float(diff.max()), float(rel.max()), float(ratio.max()), passed, problem,
                      [int(i) for i in np.unravel_index(worst, e.shape)])
