"""Count-aware phase decision: the Poisson likelihood of a measured spectrum.

At map dwell times a spectrum holds tens to a few hundred counts.  A CNN trained on
long-dwell standards, or on a few hundred spectra, is not calibrated there (on the real
P45 map its in-run misclassification is twice its validation figure).  This classifier
uses what is known exactly about such spectra: given the phase ``l`` of a pixel, the
counts ``x_b`` in energy bin ``b`` are Poisson with mean ``N_s · s_lb``, where ``s_l``
is the phase's mean spectral shape (learned from training spectra) and ``N_s`` the
spectrum's total.  Conditioned on the total the counts are multinomial, so the
log-likelihood of phase ``l`` is

    log p(x | l) = Σ_b x_b log s_lb + log NB(N | μ_l, r_l)

(the second term: the phase's count rate, a negative-binomial fit of the training
totals; phases of different BSE brightness emit differently).  The posterior over
{ill-spectrum, phase 1..L} is ``softmax(log p(x | l) / T + log π_l)`` with a temperature
``T >= 1`` fitted on held-apart spectra (the classifier is then *calibrated*: among
spectra given probability 0.8, about 80 % are right; :func:`calibration_error`).  The
ill-spectrum / background class (label 0) has a flat shape over the energy range and no
preferred count rate; it takes a spectrum only when no phase explains it.

Numpy only (no TensorFlow): it trains in well under a second and runs anywhere.  Saved as
``classifier.json`` (``"kind": "poisson"``) plus ``poisson_model.npz`` in a classifier
folder; :func:`load_classifier` opens either kind of folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from scipy.special import gammaln, logsumexp

from ._files import write_json_atomic
from ._validation import InputError, check_spectra
from .spectra import EnergyAxis, ReferenceSpectra

__all__ = ["PoissonPhaseClassifier", "load_classifier", "classifier_kind", "classifier_files",
           "check_classifier_folder", "calibration_error",
           "KIND", "MODEL_FILE"]

KIND = "poisson"
MODEL_FILE = "poisson_model.npz"
_META_FILE = "classifier.json"
_FORMAT = "napari-slads-eds spectrum classifier"
FORMAT_VERSION = 1
#: Temperatures tried by the calibration (log-spaced, 1 = the likelihood as it is).
TEMPERATURES = tuple(float(t) for t in np.round(np.geomspace(1.0, 30.0, 25), 4))


def calibration_error(prob, labels, n_bins: int = 10) -> float:
    """Expected calibration error of the most probable class.

    Parameters
    ----------
    prob : ndarray, shape (n, C), rows sum to 1
        Column ``c`` is the probability of label ``c``.
    labels : ndarray, shape (n,), int in 0..C-1
        True labels.
    n_bins : int
        Confidence bins of equal width on [0, 1].

    Returns
    -------
    float
        ``Σ_bins (n_bin / n) |accuracy_bin − mean confidence_bin|`` (0 = calibrated).
    """
    p = np.asarray(prob, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise InputError(f"calibration_error: prob (n, C) and labels (n,) expected, got {p.shape}, {y.shape}")
    if y.size == 0:
        return float("nan")
    conf = p.max(axis=1)
    right = p.argmax(axis=1) == y
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    n = np.bincount(b, minlength=n_bins)
    acc = np.bincount(b, weights=right, minlength=n_bins)
    cs = np.bincount(b, weights=conf, minlength=n_bins)
    ok = n > 0
    return float(np.sum(np.abs(acc[ok] - cs[ok])) / y.size)


def _nb_fit(totals: np.ndarray) -> tuple[float, float]:
    """Mean and dispersion r of a negative binomial by the method of moments
    (r = inf, a Poisson, when the totals are not over-dispersed)."""
    t = np.asarray(totals, dtype=np.float64)
    mu = max(float(t.mean()), 1e-3)
    var = float(t.var())
    r = mu * mu / (var - mu) if var > mu * (1 + 1e-6) else np.inf
    return mu, float(min(r, 1e8))


def _nb_logpmf(n: np.ndarray, mu: float, r: float) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    if r >= 1e8:
        return n * np.log(mu) - mu - gammaln(n + 1)
    return (gammaln(n + r) - gammaln(r) - gammaln(n + 1) + r * np.log(r / (r + mu))
            + n * np.log(mu / (r + mu)))


class PoissonPhaseClassifier:
    """Phase of a low-count spectrum from its Poisson likelihood under each phase.

    Parameters
    ----------
    shapes : ndarray, shape (L + 1, B), float64
        Mean spectral shape per class over B energy bins, rows sum to 1 (row 0: the
        flat ill-spectrum / background class, rows 1..L: the phases).
    count_model : ndarray, shape (L + 1, 2), float64
        Negative-binomial mean and dispersion of the total counts per class (row 0 is
        ignored: the background has no preferred count rate).
    axis : EnergyAxis
        Energy axis of the spectra the classifier takes (p channels).
    channels : ndarray, shape (B + 1,), int64
        Bin ``b`` sums channels ``channels[b]:channels[b + 1]`` of a spectrum.
    phase_names : sequence of str, length L
    temperature : float >= 1
        The likelihood is divided by it (fitted by :meth:`train` on held-apart spectra).
    log_prior : ndarray, shape (L + 1,), optional
        Log prior of the classes (default: ill-spectrum 1e-3, phases equal).
    report : dict, optional
        Training report.

    Raises
    ------
    InputError
        Inconsistent shapes, shapes not summing to 1, a temperature below 1.
    """

    kind = KIND

    def __init__(self, shapes, count_model, axis: EnergyAxis, channels, phase_names, *,
                 temperature: float = 1.0, log_prior=None, report: dict | None = None):
        s = np.asarray(shapes, dtype=np.float64)
        cm = np.asarray(count_model, dtype=np.float64)
        ch = np.asarray(channels, dtype=np.int64).reshape(-1)
        if s.ndim != 2 or s.shape[0] < 2:
            raise InputError(f"shapes: expected (L + 1, B) with L >= 1, got {s.shape}")
        if ch.size != s.shape[1] + 1 or ch[0] < 0 or ch[-1] > axis.size or np.any(np.diff(ch) < 1):
            raise InputError(f"channels: expected {s.shape[1] + 1} increasing bin edges within the "
                             f"{axis.size} channels of the axis")
        if not np.all(np.isfinite(s)) or s.min() <= 0 or not np.allclose(s.sum(axis=1), 1.0, atol=1e-6):
            raise InputError("shapes: every row must be positive and sum to 1")
        if cm.shape != (s.shape[0], 2) or not np.all(np.isfinite(cm)) or cm[1:, :].min() <= 0:
            raise InputError(f"count_model: expected positive (mean, dispersion) rows, shape {(s.shape[0], 2)}")
        names = [str(n) for n in phase_names]
        if len(names) != s.shape[0] - 1:
            raise InputError(f"{len(names)} phase names for {s.shape[0] - 1} phases")
        if not (float(temperature) >= 1.0 and np.isfinite(float(temperature))):
            raise InputError(f"temperature must be a finite number >= 1, got {temperature}")
        lp = (np.log(np.r_[1e-3, np.full(s.shape[0] - 1, (1 - 1e-3) / (s.shape[0] - 1))])
              if log_prior is None else np.asarray(log_prior, dtype=np.float64).reshape(-1))
        if lp.size != s.shape[0] or not np.all(np.isfinite(lp)):
            raise InputError(f"log_prior: expected {s.shape[0]} finite values")
        self.shapes = s
        self.log_shapes = np.log(s)
        self.count_model = cm
        self.axis = axis
        self.channels = ch
        self.phase_names = tuple(names)
        self.temperature = float(temperature)
        self.log_prior = lp - logsumexp(lp)
        self.report = dict(report or {})

    @property
    def n_phases(self) -> int:
        """L."""
        return self.shapes.shape[0] - 1

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, references: ReferenceSpectra, *, bin_keV: float = 0.05, min_energy_keV: float = 0.1,
              max_energy_keV: float | None = None, pseudo_counts: float = 1.0, seed: int = 0,
              calibration=None, progress=None, **_ignored) -> tuple["PoissonPhaseClassifier", dict]:
        """Learn each phase's mean shape and count rate; fit the temperature.

        The spectra of each phase are split in halves (as the CNN's training, SPEC
        "EDS adaptation"): the first half gives the shapes and count models, the second
        half the temperature (the one of :data:`TEMPERATURES` with the lowest negative
        log-likelihood of the true phases) and the validation misclassification,
        confusion matrix and calibration error.

        Parameters
        ----------
        references : ReferenceSpectra
            ``spectra`` (L, M, p) counts, M >= 2, on ``references.axis``.
        bin_keV : float
            Width of the energy bins (keV; EDS lines are ~0.13 keV wide, so 0.05 keV loses
            nothing).
        min_energy_keV, max_energy_keV : float
            Energy range used (default: 0.1 keV up to the axis end).
        pseudo_counts : float
            Per-bin pseudo-counts of the pooled mean shape added to each phase's sum (so
            no bin has probability 0).
        seed : int
            Unused (the fit is deterministic); accepted for the common training interface.
        calibration : tuple (spectra (n, p), labels (n,)), optional
            Held-apart spectra with true labels 1..L to fit the temperature on instead of
            the validation half (e.g. real map pixels).
        progress : callable(dict), optional

        Returns
        -------
        (PoissonPhaseClassifier, dict)
            The classifier and its report: misclassification, confusion (L × L, rows =
            true phase), calibration_error, temperature, n_train, n_val, seconds.

        Raises
        ------
        InputError
            Fewer than 2 spectra per phase, an energy range with fewer than 2 bins, a
            phase without counts.
        """
        t0 = time.perf_counter()
        S = np.asarray(references.spectra, dtype=np.float64)
        axis = references.axis
        L, M, p = S.shape
        if not (np.isfinite(bin_keV) and bin_keV > 0):
            raise InputError(f"bin_keV must be a positive width in keV, got {bin_keV}")
        if M < 2:
            raise InputError(f"the Poisson classifier needs >= 2 spectra per phase, got {M}")
        E = axis.energies
        hi = float(max_energy_keV) if max_energy_keV is not None else float(E[-1])
        keep = np.flatnonzero((E >= min_energy_keV) & (E <= hi))
        width = max(1, int(round(bin_keV / axis.scale_keV)))
        nb = keep.size // width
        if nb < 2:
            raise InputError(f"fewer than 2 energy bins of {bin_keV} keV between {min_energy_keV} and {hi} keV")
        channels = keep[0] + width * np.arange(nb + 1)
        m = M // 2
        train, val = S[:, :m], S[:, m:] if M - m > 0 else S[:, :m]
        tb = _bin(train.reshape(L * m, p), channels).reshape(L, m, nb)
        tot = tb.sum(axis=1)                              # (L, B)
        if np.any(tot.sum(axis=1) <= 0):
            raise InputError("a phase has no counts in its training spectra")
        pooled = tot.sum(axis=0) / tot.sum()
        pooled = (pooled + 1e-3 / nb) / (1 + 1e-3)
        a = float(pseudo_counts) * nb
        shapes = (tot + a * pooled) / (tot.sum(axis=1, keepdims=True) + a)
        flat = np.full((1, nb), 1.0 / nb)
        cm = np.ones((L + 1, 2))
        for l in range(L):
            cm[l + 1] = _nb_fit(tb[l].sum(axis=1))
        names = references.phase_names
        clf = cls(np.vstack([flat, shapes]), cm, axis, channels, names)
        if calibration is not None:
            cx, cy = calibration
            cx = check_spectra(cx, p, name="calibration spectra")
            cy = np.asarray(cy).reshape(-1)
            if cy.size != cx.shape[0] or cy.size == 0:
                raise InputError(f"calibration: {cx.shape[0]} spectra but {cy.size} labels (one label per "
                                 f"spectrum, at least one)")
            if not (np.all(cy == np.round(cy)) and cy.min() >= 1 and cy.max() <= L):
                raise InputError(f"calibration labels must be integers 1..{L} (the phases)")
            cy = cy.astype(np.int64)
        else:
            cx = val.reshape(-1, p)
            cy = np.repeat(np.arange(1, L + 1), val.shape[1])
        ll = clf.log_likelihood(cx)
        best = (np.inf, 1.0)
        for T in TEMPERATURES:
            z = ll / T + clf.log_prior
            nll = -np.mean(z[np.arange(cy.size), cy] - logsumexp(z, axis=1))
            if nll < best[0] - 1e-12:
                best = (nll, T)
        clf.temperature = best[1]
        vx = val.reshape(-1, p)
        vy = np.repeat(np.arange(1, L + 1), val.shape[1])
        prob = clf.predict_proba(vx)
        lab = clf._labels(prob)
        conf = np.zeros((L, L), dtype=np.int64)
        ph = lab > 0
        np.add.at(conf, (vy[ph] - 1, lab[ph] - 1), 1)
        report = {
            "kind": KIND,
            "misclassification": float(np.mean(lab != vy)),
            "confusion": conf.tolist(),
            "calibration_error": calibration_error(prob, vy),
            "temperature": clf.temperature,
            "calibrated_on": "held-apart spectra given" if calibration is not None else "validation half",
            "bins": int(nb), "bin_keV": float(width * axis.scale_keV),
            "mean_counts": [float(c) for c in cm[1:, 0]],
            "ill_rate_validation": float(np.mean(lab == 0)),
            "n_train": int(L * m), "n_val": int(vx.shape[0]),
            "threshold": float("nan"),
            "seconds": float(time.perf_counter() - t0),
        }
        clf.report = report
        if progress is not None:
            progress({"stage": "classifier", "epoch": 1, "epochs": 1})
        return clf, dict(report)

    # ------------------------------------------------------------------ inference
    def log_likelihood(self, spectra) -> np.ndarray:
        """``log p(x | class)`` (n, L + 1) of spectra (n, p) (column 0: ill-spectrum).

        Raises
        ------
        InputError
            Wrong number of channels, NaN/inf or negative counts.
        """
        x = check_spectra(spectra, self.axis.size, name="spectra")
        xb = _bin(np.asarray(x, dtype=np.float64), self.channels)
        n = xb.sum(axis=1)
        ll = xb @ self.log_shapes.T
        for l in range(1, self.shapes.shape[0]):
            ll[:, l] += _nb_logpmf(n, *self.count_model[l])
        # background: no preferred count rate (log-uniform over 0..a million counts)
        ll[:, 0] += -np.log1p(n) - np.log(np.log(1e6))
        return ll

    def predict_proba(self, spectra) -> np.ndarray:
        """Calibrated posterior (n, L + 1) over {ill-spectrum, phase 1..L}, rows sum to 1.

        ``softmax(log p(x | l) / T + log π_l)``.

        Raises
        ------
        InputError
            As :meth:`log_likelihood`.
        """
        z = self.log_likelihood(spectra) / self.temperature + self.log_prior
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def _labels(self, prob: np.ndarray) -> np.ndarray:
        lab = (np.argmax(prob[:, 1:], axis=1) + 1).astype(np.int16)
        lab[prob[:, 0] > 0.5] = 0
        return lab

    def predict(self, spectra) -> np.ndarray:
        """Label (n,) int16 of each spectrum: 0 = ill-spectrum (posterior of the background
        class > 0.5), else the most probable phase 1..L."""
        return self._labels(self.predict_proba(spectra))

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write ``classifier.json`` (kind "poisson") and ``poisson_model.npz``; no pickle."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / MODEL_FILE, shapes=self.shapes, count_model=self.count_model, channels=self.channels,
                 log_prior=self.log_prior)
        write_json_atomic(d / _META_FILE, {"format": _FORMAT, "kind": KIND, "format_version": FORMAT_VERSION,
                                           "temperature": self.temperature, "axis": self.axis,
                                           "phase_names": list(self.phase_names), "report": self.report})
        return d

    @classmethod
    def load(cls, directory) -> "PoissonPhaseClassifier":
        """Load a classifier written by :meth:`save`.

        Raises
        ------
        InputError
            Missing folder or file, unreadable or inconsistent contents (named).
        """
        d = Path(directory)
        meta = _read_meta(d)
        mp = d / MODEL_FILE
        if not mp.is_file():
            raise InputError(f"{mp}: missing classifier file (expected {_META_FILE} and {MODEL_FILE} in {d})")
        try:
            with np.load(mp, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in ("shapes", "count_model", "channels", "log_prior")}
        except Exception as exc:  # zip, CRC, truncation and format errors of many kinds
            raise InputError(f"{mp}: not a readable Poisson classifier model ({type(exc).__name__}: {exc})") from exc
        try:
            axis = EnergyAxis.from_dict(meta["axis"])
            names = meta["phase_names"]
            if not isinstance(names, list) or not names:
                raise InputError(f"phase_names must be a list of one or more names, got {names!r}")
            return cls(arrays["shapes"], arrays["count_model"], axis, arrays["channels"], names,
                       temperature=float(meta["temperature"]), log_prior=arrays["log_prior"],
                       report=dict(meta.get("report") or {}))
        except InputError as exc:
            raise InputError(f"{d}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{d / _META_FILE}: missing or invalid entry ({exc!r})") from exc


def _bin(x: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Sum channels into bins: (n, p) -> (n, B) (``np.add.reduceat`` over the bin edges)."""
    sub = x[:, channels[0]:channels[-1]]
    return np.add.reduceat(sub, channels[:-1] - channels[0], axis=1)


def _read_meta(d: Path) -> dict:
    if not d.is_dir():
        raise InputError(f"classifier folder not found: {d}")
    mpath = d / _META_FILE
    if not mpath.is_file():
        raise InputError(f"{mpath}: missing classifier description")
    try:
        meta = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{mpath}: not a readable classifier description ({exc})") from exc
    if not isinstance(meta, dict):
        raise InputError(f"{mpath}: not a classifier description (a JSON object expected)")
    return meta


def classifier_kind(directory) -> str:
    """``"poisson"`` or ``"cnn"`` (the paper's NNR + CNN) for a saved classifier folder.

    Raises
    ------
    InputError
        Missing folder, unreadable ``classifier.json``, or a ``kind`` other than "poisson"
        or "cnn" (a folder written without ``kind`` is the CNN kind).
    """
    d = Path(directory)
    kind = _read_meta(d).get("kind", "cnn")
    if kind not in (KIND, "cnn"):
        raise InputError(f"{d / _META_FILE}: unknown classifier kind {kind!r} (expected 'cnn' or '{KIND}')")
    return kind


#: The files of a saved classifier folder, per kind.
FILES = {"poisson": (_META_FILE, MODEL_FILE), "cnn": (_META_FILE, "detector.keras", "cnn.keras")}


def classifier_files(directory) -> tuple[str, ...]:
    """The file names a saved classifier folder of either kind holds (``classifier.json``
    first): ``classifier.json, poisson_model.npz`` or ``classifier.json, detector.keras,
    cnn.keras``.  The folder's ``classifier.json`` says the kind; a folder without one is
    taken for the CNN kind, so that the missing-file error names all three files.

    Raises
    ------
    InputError
        ``classifier.json`` exists but is unreadable.
    """
    d = Path(directory)
    if not (d / _META_FILE).is_file():
        return FILES["cnn"]
    return FILES[classifier_kind(d)]


def check_classifier_folder(directory, what: str | None = None) -> tuple[str, ...]:
    """Check that ``directory`` holds every file of a saved classifier; return the names.

    Raises
    ------
    InputError
        Not a folder, or a file missing (the message names it and the kind's files).
    """
    d = Path(directory)
    label = what or str(d)
    if not d.is_dir():
        raise InputError(f"{label}: classifier folder not found")
    names = classifier_files(d)
    for name in names:
        if not (d / name).is_file():
            raise InputError(f"{label}: missing {name} (a classifier folder holds {', '.join(names)})")
    return names


def load_classifier(directory):
    """Open a saved classifier of either kind (the CNN one imports TensorFlow: call it
    only inside the engine process).

    Raises
    ------
    InputError
        As :meth:`PoissonPhaseClassifier.load` or ``SpectrumClassifier.load``.
    """
    if classifier_kind(directory) == KIND:
        return PoissonPhaseClassifier.load(directory)
    from .classifier import SpectrumClassifier

    return SpectrumClassifier.load(directory)
