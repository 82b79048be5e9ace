"""``slads-eds sweep``: many SLADS and static-scan runs over an image archive, on Dask.

Every (micrograph, strategy, setting, seed) is one task of a dask.distributed cluster: a
local one (processes, one thread each) or an existing scheduler given by its address.
The classifier and the ERD models are trained once per sweep, by tasks on the cluster,
and shipped to the workers as bytes in a worker plugin (so a worker that is restarted
after a crash gets them too); no task retrains them.

TensorFlow is imported only inside the worker processes (the classifier and the MLP ERD
model need it); the client process -- the CLI, a script, the napari GUI -- imports
neither TensorFlow nor Qt.  Workers must be able to import ``napari_slads_eds`` and read
the micrograph paths (on one machine, or on a shared file system).

Output folder::

    DIR/sweep.json          settings of the sweep (a resumed sweep must match them)
    DIR/models/             classifier (3 files) and ERD model(s), trained once
    DIR/rows/<task>.json    one finished task (written as it arrives: what resume skips)
    DIR/results.parquet     the table, one row per task (also results.csv, without curves)
    DIR/summary.md          TD per fraction and strategy, beam time at the target TD
    DIR/td_vs_fraction.png, DIR/beam_time_saved.png

The parts: :mod:`~napari_slads_eds.sweep_config` (settings, plan of tasks, file names),
:mod:`~napari_slads_eds.sweep_tasks` (the work on the workers: one task, the model
training), :mod:`~napari_slads_eds.sweep_cluster` (the Dask client and the submission of
tasks), :mod:`~napari_slads_eds.sweep_output` (the output folder, table and summary).
This module owns the entry point :func:`sweep` (the ``slads-eds sweep`` command is in
:mod:`napari_slads_eds.cli.sweep`); it re-exports the public names of
its parts, so ``from napari_slads_eds.sweep import SweepConfig, plan_tasks, ...`` works.

Example
-------
>>> table = sweep(["a.png", "b.png"], 2, fractions=(0.05, 0.1, 0.2),
...               strategies=("slads", "halton", "random"), seeds=(0, 1, 2),
...               out="sweep-out")                                    # doctest: +SKIP
"""

from __future__ import annotations

import time

from .sweep_cluster import _Cluster, _run_todo
from .sweep_config import (CONFIG_FILE, CSV_FILE, MODELS_DIR, ROWS_DIR, STRATEGIES, SUMMARY_FILE, TABLE_FILE,
                           SweepConfig, expand_images, plan_tasks)
from .sweep_output import _check_config, _finished_rows, _table, _write_outputs, summarise
from .sweep_tasks import run_task

__all__ = ["SweepConfig", "sweep", "plan_tasks", "run_task", "expand_images", "summarise",
           "STRATEGIES", "TABLE_FILE", "CSV_FILE", "SUMMARY_FILE", "CONFIG_FILE", "ROWS_DIR", "MODELS_DIR"]


def sweep(images, phases: int, *, out, fractions=(0.05, 0.1, 0.2), strategies=STRATEGIES,
          erd=("linear",), batch=(1,), initial=("halton",), seeds=(0,), size: int = 64,
          downsample: int = 2, scheduler=None, workers: int | None = None, target_td: float = 0.01,
          dwell: float = 1.0, train=(), model_seed: int = 0, epochs: int | None = None,
          progress: bool = False, log=None, pin_cores: bool = True, **settings):
    """Run a sweep of SLADS and static scans over micrographs on Dask; return the table.

    Every (micrograph, strategy, setting, seed) is a Dask task; finished tasks are written
    to ``out/rows`` as they arrive, so an interrupted sweep started again with the same
    settings runs only what is missing (and reuses the models in ``out/models``).

    Parameters
    ----------
    images : sequence of str or Path
        Micrographs (PNG/TIFF, grey 8/16-bit) or glob patterns.
    phases : int
        L, phases of every micrograph.
    out : path
        Output folder (see the module docstring).
    fractions : sequence of float
        Sampling fractions in (0, 1] at which TD is reported.
    strategies : sequence of {"slads", "halton", "random"}
    erd : sequence of {"linear", "mlp"}
    batch : sequence of int
    initial : sequence of {"halton", "random"}
    seeds : sequence of int
    size, downsample : int
        Grid N and micrograph pixels per grid pixel.
    scheduler : str or distributed.Client, optional
        Address of a running Dask scheduler (``tcp://host:8786``) or a client; None: a
        local cluster of ``workers`` processes (default: one per core), one thread each.
    workers : int, optional
    target_td : float
        TD the summary reports the beam time for.
    dwell : float
        Seconds per spectrum (beam time columns).
    train : sequence of path
        ERD training micrographs (default: the non-test regions of ``images``).
    model_seed : int
        Seed of the reference spectra and of the model training.
    epochs : int, optional
        Classifier CNN epochs.
    progress : bool
        Show a progress bar (tasks done / total, time left) on stderr.
    log : callable(str), optional
        Receives status lines (cluster, training, ...).
    pin_cores : bool
        Bind every worker process to a core of its own (see
        :func:`~napari_slads_eds.sweep_tasks._pin_to_free_core`); False: tasks may spread
        over all cores (numbers are the same either way).
    **settings
        Other :class:`SweepConfig` fields (``max_train_regions``, ``k``, ``ill_fraction``,
        ``denoise``, ``crop_bottom``).

    Returns
    -------
    pandas.DataFrame
        One row per task, in plan order (see :func:`run_task` for the columns).

    Raises
    ------
    InputError
        Bad settings, an output folder that holds a sweep with other fixed settings (or
        other files), an unreachable scheduler, no ERD training region.
    """
    from ._files import output_folder

    log = log or (lambda text: None)
    cfg = SweepConfig(images=expand_images(images), phases=phases, fractions=tuple(fractions),
                      strategies=tuple(strategies), erd=tuple(erd), batch=tuple(batch),
                      initial=tuple(initial), seeds=tuple(seeds), size=size, downsample=downsample,
                      target_td=target_td, dwell=dwell, train=list(train or ()), model_seed=model_seed,
                      epochs=epochs, **settings).check()
    if "slads" not in cfg.strategies:
        cfg.erd = cfg.erd[:1]
    folder = output_folder(out)
    with folder as o:
        _check_config(o, cfg)
        (o / ROWS_DIR).mkdir(exist_ok=True)
        tasks = plan_tasks(cfg)
        rows = _finished_rows(o, tasks)
        todo = [t for t in tasks if t["id"] not in rows]
        log(f"sweep: {len(tasks)} tasks ({len(rows)} finished earlier, {len(todo)} to run), "
            f"{len(cfg.images)} image(s), output {o}")
        t0 = time.perf_counter()
        if todo:
            cl = _Cluster(scheduler, workers, log)
            try:
                _run_todo(cl.client, o, cfg, todo, rows, progress, log, pin_cores)
            finally:
                cl.close()
        table = _table(cfg, tasks, rows)
        _write_outputs(o, cfg, table, time.perf_counter() - t0)
    return table
