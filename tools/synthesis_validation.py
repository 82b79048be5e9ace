"""Validate the synthetic spectra (napari_slads_eds.synthesis) against the real standards.

Writes docs/images/synthesis_*.png and docs/synthesis_validation.json, and prints:
* for every standard: main peak position of the model and of the real spectrum (channels),
  the other strong peaks, and the shape correlation (linear and square-root counts,
  0.2 keV .. beam energy);
* the confusion matrix of a classifier trained ONLY on synthetic spectra of the six NIST
  standards' compositions (through the engine: TensorFlow never runs in this process),
  tested on the real standard spectra binomially thinned to the training count level
  (7500 counts, 40 realisations per standard).

Usage:  python tools/synthesis_validation.py [--spectra DIR] [--out docs] [--no-classifier]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

STANDARDS = [  # (name in STANDARD_COMPOSITIONS, file, beam keV)
    ("MgO", "nist_MgO_std_15kV.msa", 15.0),
    ("Al", "nist_Al_std_15kV.msa", 15.0),
    ("Si", "nist_Si_std_15kV.msa", 15.0),
    ("CaF2", "nist_CaF2_std_15kV.msa", 15.0),
    ("K412 glass", "nist_K412_glass_15kV.msa", 15.0),
    ("Fe", "nist_Fe_std_15kV.msa", 15.0),
    ("calcite", "tima_calcite_25kV.msa", 25.0),
]
# The "main peak" is the strongest peak of the measured spectrum above 0.2 keV; its model
# counterpart is the model's local maximum within 5 channels (None: the model has no peak
# there, e.g. pile-up or Si internal-fluorescence artefacts it does not simulate).
CLASSIFIER_PHASES = ["MgO", "Al", "Si", "CaF2", "K412 glass", "Fe"]


def peaks(counts: np.ndarray, axis, lo: float = 0.2, n: int = 3, min_sep_keV: float = 0.25):
    """Channels of the n strongest local maxima above ``lo`` keV, at least min_sep apart."""
    from scipy.ndimage import gaussian_filter1d

    c = gaussian_filter1d(np.asarray(counts, float), 1.0)
    E = axis.energies
    order = np.argsort(c)[::-1]
    out = []
    for i in order:
        if E[i] < lo or i == 0 or i == len(c) - 1 or not (c[i] >= c[i - 1] and c[i] >= c[i + 1]):
            continue
        if all(abs(E[i] - E[j]) > min_sep_keV for j in out):
            out.append(int(i))
        if len(out) == n:
            break
    return out


def main(argv=None) -> int:
    from napari_slads_eds.eds_io import read_spectrum_any, to_axis
    from napari_slads_eds.spectra import EnergyAxis, default_axis
    from napari_slads_eds.synthesis import STANDARD_COMPOSITIONS, expected_spectrum, synthetic_references

    ap = argparse.ArgumentParser()
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--spectra", default=str(root.parent / "shared" / "data" / "spectra"))
    ap.add_argument("--out", default=str(root / "docs"))
    ap.add_argument("--no-classifier", action="store_true")
    args = ap.parse_args(argv)
    spectra_dir = Path(args.spectra)
    if not spectra_dir.is_dir():
        spectra_dir = root / "sample_data" / "spectra"
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {"standards": {}}
    fig, axs = plt.subplots(4, 2, figsize=(9, 10), dpi=70)
    for a, (name, fname, beam) in zip(axs.flat, STANDARDS):
        f = spectra_dir / fname
        if not f.is_file():
            a.set_visible(False)
            continue
        s = read_spectrum_any(f)
        ax = EnergyAxis(s.axis.offset_keV, s.axis.scale_keV, min(s.axis.size, 2048))
        real = np.asarray(to_axis(s.counts, s.axis, ax, beam_energy_keV=beam), float)
        model = expected_spectrum(STANDARD_COMPOSITIONS[name], ax, beam)
        E = ax.energies
        m = (E > 0.2) & (E < beam)
        model = model / model[m].sum() * real[m].sum()
        pr = peaks(real, ax)
        pm_all = peaks(model, ax, n=40, min_sep_keV=0.03)

        def partner(i, window=5):
            near = [j for j in pm_all if abs(j - i) <= window]
            return int(min(near, key=lambda j: abs(j - i))) if near else None

        matched = [(int(i), partner(i)) for i in pr]
        main_diff = None if matched[0][1] is None else matched[0][1] - matched[0][0]
        pm = [matched[0][1] if matched[0][1] is not None else pr[0]]
        r_lin = float(np.corrcoef(model[m], real[m])[0, 1])
        r_sqrt = float(np.corrcoef(np.sqrt(model[m]), np.sqrt(real[m]))[0, 1])
        report["standards"][name] = {
            "file": fname, "beam_keV": beam, "main_peak_keV_real": float(E[pr[0]]),
            "main_peak_keV_model": float(E[pm[0]]), "main_peak_channel_difference": main_diff,
            "peaks_real_vs_model_channels": matched, "correlation": r_lin, "correlation_sqrt": r_sqrt}
        print(f"{name:11s} main peak real {E[pr[0]]:.3f} keV, model {E[pm[0]]:.3f} keV "
              f"({main_diff:+d} ch); strongest peaks (real, model channel) {matched}; r = {r_lin:.4f}, r(sqrt) = {r_sqrt:.4f}")
        a.semilogy(E, real + 1, lw=0.8, label="measured")
        a.semilogy(E, model + 1, lw=0.8, label="model")
        a.set_xlim(0, min(beam, 10))
        a.set_title(f"{name} ({beam:g} kV): r = {r_lin:.3f}", fontsize=9)
        a.tick_params(labelsize=7)
        a.legend(fontsize=7)
    for a in axs.flat[len(STANDARDS):]:
        a.set_visible(False)
    fig.supxlabel("energy (keV)")
    fig.supylabel("counts + 1")
    fig.tight_layout()
    fig.savefig(out / "images" / "synthesis_vs_standards.png")
    plt.close(fig)

    # Pb-Sn at 15 kV, the paper's 2-phase sample (no open real spectra exist)
    ax = default_axis()
    fig, a = plt.subplots(figsize=(7, 3), dpi=70)
    for comp in ("Pb 0.7, Sn 0.3", "Sn 0.95, Pb 0.05"):
        a.plot(ax.energies, expected_spectrum(comp, ax, 15.0, total_counts=7500), lw=0.8, label=comp)
    a.set_xlim(0, 15)
    a.set_xlabel("energy (keV)")
    a.set_ylabel("expected counts")
    a.set_title("synthetic Pb-Sn eutectic phases, 15 kV, 7500 counts")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "images" / "synthesis_pbsn.png")
    plt.close(fig)

    if not args.no_classifier:
        from napari_slads_eds import Engine

        ax = default_axis()
        refs = synthetic_references({n: STANDARD_COMPOSITIONS[n] for n in CLASSIFIER_PHASES}, ax, 15.0,
                                    n_per_phase=400, seed=0)
        rng = np.random.default_rng(5)
        test, true = [], []
        for l, (name, fname, _) in enumerate(STANDARDS[:6]):
            s = read_spectrum_any(spectra_dir / fname)
            c = s.on_axis(ax).astype(np.int64)
            for _ in range(40):
                test.append(rng.binomial(c, 7500.0 / c.sum()))
                true.append(l + 1)
        test = np.asarray(test, np.float32)
        true = np.asarray(true)
        model_dir = Path("/tmp") / "slads_synthetic_classifier"
        with Engine() as eng:
            rep = eng.run("train_classifier", references=refs, out_dir=str(model_dir), seed=0,
                          noise_lambda=0.0, n_noisy=1, n_noisy_val=1, epochs=12)
            lab = np.asarray(eng.run("classify", classifier=str(model_dir), spectra=test))
        conf = np.zeros((7, 7), dtype=int)
        np.add.at(conf, (true, lab), 1)
        report["classifier"] = {"phases": CLASSIFIER_PHASES, "train": "400 synthetic spectra per phase "
                                "(200 train, 200 validation), 7500 counts, detector parameters varied",
                                "validation_misclassification": rep["misclassification"],
                                "test": "40 binomially thinned real spectra (7500 counts) per standard",
                                "confusion_rows_true_0_to_L": conf.tolist(),
                                "accuracy": float(np.mean(lab == true)), "seconds": rep["seconds"]}
        print("confusion (rows: true 0..6, columns: predicted 0..6; 0 = ill-spectrum):")
        print(conf)
        print(f"accuracy on real standards: {np.mean(lab == true):.4f}")
    (out / "synthesis_validation.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
