"""Benchmark: the classifier's forward pass in the engine, numpy copy against Keras.

SpectrumClassifier classifies batches of at most ``NUMPY_MAX_BATCH`` spectra with a
hand-written numpy copy of the NNR detector and the CNN (``_numpy_forward``), larger ones
with a compiled ``tf.function``.  This script measures, inside the engine process (where
TensorFlow's thread pools are alive, as in a run), the wall time of one call for batches
of n spectra (p = 2048 channels, L = 3 phases, the paper's networks, untrained weights:
the cost does not depend on them) through

* ``numpy``: ``clf._numpy_forward(stabilise(x))``;
* ``keras``: ``detector(x, training=False)`` and ``cnn(x[..., None], training=False)``
  (the plain Keras call), then the variance of eq. 14 in numpy;
* ``tf_function``: ``clf._forward(tf.constant(stabilise(x)))``, the compiled pass used
  for batches above ``NUMPY_MAX_BATCH``;

median over ``--repeat`` calls after ``--warmup`` calls, in milliseconds, and checks that
the three agree (largest difference of the probabilities).

Usage::

    nice -n 10 python benchmarks/bench_forward.py [--sizes 1 2 4 8 16 64] [--repeat 200] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def measure(sizes=(1, 2, 4, 8, 16, 64), repeat: int = 200, warmup: int = 20, p: int = 2048,
            n_phases: int = 3, seed: int = 0) -> dict:
    """Engine-side: time the three forward passes (see the module docstring)."""
    import tensorflow as tf

    from napari_slads_eds.classifier import SpectrumClassifier, build_cnn, build_detector, stabilise
    from napari_slads_eds.spectra import default_axis

    import keras

    keras.utils.set_random_seed(seed)
    axis = default_axis(p)
    det, cnn = build_detector(p, scale=0.1), build_cnn(p, n_phases, scale=0.1)
    clf = SpectrumClassifier(det, cnn, axis=axis, phase_names=[f"phase {i + 1}" for i in range(n_phases)],
                             threshold=1.0)
    if clf._np_weights is None:
        raise RuntimeError("the numpy copy of the networks is not available for these models")
    rng = np.random.default_rng(seed)

    def keras_call(xs):
        f_hat = det(xs, training=False).numpy()
        prob = cnn(xs[:, :, None], training=False).numpy()
        return np.var(np.abs(clf.f - f_hat), axis=1), prob

    def tf_function(xs):
        v, prob = clf._forward(tf.constant(xs))
        return v.numpy(), prob.numpy()

    ways = {"numpy": clf._numpy_forward, "keras": keras_call, "tf_function": tf_function}
    out = {"p": p, "n_phases": n_phases, "repeat": repeat, "ms": {}, "max_prob_diff": {}}
    for n in sizes:
        x = stabilise(rng.poisson(2.0, size=(n, p)).astype(np.float32))
        res = {}
        for name, fn in ways.items():
            for _ in range(warmup):
                r = fn(x)
            times = np.empty(repeat)
            for i in range(repeat):
                t = time.perf_counter()
                r = fn(x)
                times[i] = time.perf_counter() - t
            res[name] = r
            out["ms"].setdefault(name, {})[n] = float(np.median(times) * 1e3)
        out["max_prob_diff"][n] = float(max(np.abs(res["numpy"][1] - res[k][1]).max()
                                            for k in ("keras", "tf_function")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the engine imports this module

    from napari_slads_eds import Engine

    with Engine() as eng:
        res = eng.run("call", target="bench_forward:measure",
                      kwargs={"sizes": list(args.sizes), "repeat": args.repeat})
    print(f"forward pass in the engine, p = {res['p']}, L = {res['n_phases']}, "
          f"median of {res['repeat']} calls, ms per call")
    print(f"{'n':>5} {'numpy':>9} {'keras':>9} {'tf.function':>12} {'max |dprob|':>12}")
    for n in args.sizes:
        ms = res["ms"]
        print(f"{n:>5} {ms['numpy'][n]:>9.3f} {ms['keras'][n]:>9.3f} {ms['tf_function'][n]:>12.3f} "
              f"{res['max_prob_diff'][n]:>12.2e}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
