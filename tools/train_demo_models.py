"""Train the small models that ship with the package for the one-click demo.

    python tools/train_demo_models.py [--out src/napari_slads_eds/demo_models/gold_2phase]

The napari "Run demo" action (and ``File > Open Sample > SLADS-EDS demo``) opens the bundled
nanoporous-gold micrograph, builds its simulated object with the Simulated object widget's
defaults (128x128 grid, down-sampling 2, test tile 0, seed 0, 7500 counts, 1 % ill-spectra,
the NIST standards ``default_standards_for(2)``) and starts SLADS with these models, so the
first live frame comes in seconds instead of after ~30 s of training.  The models are the
same ones ``slads-eds demo`` trains (``prepare_experiment`` with ``RunSettings()``, seed 0):

- ``classifier/``: the paper's NNR ill-spectrum detector + 1-D CNN (``.keras``, no pickle),
  trained on the training half of the reference spectra;
- ``erd_model.npz``: the linear ERD model (eqs. 10-14) trained on the micrograph's regions
  that do not overlap the test tile, with its c search;
- ``training.json``: both training reports and the settings used here.

Reproducible: the same seed gives the same models on the same TensorFlow build (byte
identity of the ``.keras`` files is not promised across TensorFlow versions).  Retraining is
one click away in the Training tab.  Runs TensorFlow in the engine process, as everything
else does.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "napari_slads_eds" / "demo_models" / "gold_2phase"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    a = ap.parse_args(argv)

    from napari_slads_eds._files import jsonable, write_json_atomic
    from napari_slads_eds.engine import Engine
    from napari_slads_eds.likelihood import classifier_files
    from napari_slads_eds.pipeline import RunSettings, prepare_experiment
    from napari_slads_eds.spectra import default_standards_for, sample_data_dir

    s = RunSettings().check()
    exp = prepare_experiment(sample_data_dir() / "sem_nanoporous_gold_inlens.png", 2, s)
    # the Simulated object tab names each phase by its standard ("Si", "Fe"); its reference
    # spectra are the same arrays (same standards, counts, seed and split), so the demo's
    # classifier is trained on exactly the spectra the tab's object draws from
    train_refs = dataclasses.replace(exp.train_references, phase_names=tuple(default_standards_for(2)))
    out = Path(a.out)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Engine() as eng:
        clf = eng.run("train_classifier", references=train_refs, out_dir=str(Path(tmp) / "classifier"),
                      seed=s.seed, kind="cnn")
        erd = eng.run("train_erd", label_images=exp.train_maps, n_phases=exp.n_phases,
                      out_path=str(Path(tmp) / "erd_model.npz"), seed=s.seed, k=s.k,
                      c_search_fraction=max(0.05, min(s.fraction, 0.3)), stop_td=s.stop_td, regressor="linear")
        if out.exists():
            shutil.rmtree(out)
        (out / "classifier").mkdir(parents=True)
        for name in classifier_files(Path(tmp) / "classifier"):
            shutil.copy2(Path(tmp) / "classifier" / name, out / "classifier" / name)
        shutil.copy2(Path(tmp) / "erd_model.npz", out / "erd_model.npz")
    for rep in (clf, erd):
        rep.pop("path", None)
    write_json_atomic(out / "training.json", jsonable({
        "made_by": "tools/train_demo_models.py", "micrograph": "sem_nanoporous_gold_inlens.png", "n_phases": 2,
        "phase_names": list(train_refs.phase_names), "settings": {"size": s.size, "downsample": s.downsample,
        "seed": s.seed, "counts_per_spectrum": s.counts_per_spectrum, "ill_fraction": s.ill_fraction},
        "classifier": clf, "erd": erd, "seconds": time.perf_counter() - t0}))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 1024:.0f} KiB): classifier validation misclassification "
          f"{clf.get('misclassification')}, ERD c = {erd.get('c')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
