"""The Dask side of a sweep's client: the cluster, the model training on it, the tasks' rows.

Owns the dask.distributed client of a sweep (:class:`_Cluster`: an existing scheduler or a
local cluster of one-thread worker processes) and :func:`_run_todo`, which trains the
models that ``DIR/models`` lacks on the cluster (once per sweep), ships them to every
worker in a plugin, submits the missing tasks longest first and writes each row as it
arrives.  distributed is imported only when a cluster is made.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from ._validation import InputError
from .sweep_config import ROWS_DIR, SweepConfig
from .sweep_output import _atomic_write, _json_row, _read_models, _write_models
from .sweep_tasks import _make_plugin, _models_task, _train_classifier_task, _train_erd_task


class _Cluster:
    """A dask.distributed client: on ``scheduler`` (an address or a Client), or on a new
    local cluster of ``workers`` processes with one thread each."""

    def __init__(self, scheduler=None, workers: int | None = None, log=None):
        from distributed import Client, LocalCluster

        self.own_client = self.cluster = self._hidden = None
        if scheduler is not None and not isinstance(scheduler, str):
            self.client = scheduler
        elif scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from exc
            self.own_client = self.client
        else:
            n = workers or max(1, min(os.cpu_count() or 1, len(os.sched_getaffinity(0))))
            try:
                import bokeh  # noqa: F401  (the dashboard needs it)
                dash = "127.0.0.1:0"
            except ImportError:
                dash = None
            # The workers run library code only: hide the calling script from multiprocessing's
            # spawn while the cluster lives (it starts workers again after a crash), so that a
            # script without an ``if __name__ == "__main__":`` guard is not run again in them.
            main = sys.modules.get("__main__")
            if main is not None and getattr(main, "__spec__", None) is None and hasattr(main, "__file__"):
                self._hidden = (main, main.__file__)
                del main.__file__
            try:
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=dash)
                self.client = self.own_client = Client(self.cluster)
            except BaseException:
                self.close()
                raise
        if log is not None:
            info = self.client.scheduler_info(n_workers=-1) if "n_workers" in _params(self.client.scheduler_info) \
                else self.client.scheduler_info()
            n_workers = len(info.get("workers", {}))
            link = None
            try:
                link = self.client.dashboard_link if info.get("services", {}).get("dashboard") else None
            except Exception:
                link = None
            log(f"Dask scheduler {self.client.scheduler.address}, {n_workers} worker(s)"
                + (f"; dashboard {link}" if link else "; no dashboard (install bokeh for one)"))

    def close(self):
        if self.own_client is not None:
            self.own_client.close()
        if self.cluster is not None:
            self.cluster.close()
        if self._hidden is not None:
            self._hidden[0].__file__ = self._hidden[1]
            self._hidden = None


def _params(fn) -> set:
    import inspect

    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _run_todo(client, out: Path, cfg: SweepConfig, todo: list, rows: dict, progress: bool, log,
              pin: bool = True) -> None:
    from distributed import as_completed

    models, reports = _read_models(out, cfg)
    need_clf = not models["classifier"]
    need_erd = [k for k in cfg.erd if k not in models["erd"]] if "slads" in cfg.strategies else []
    if need_clf or need_erd:
        log("training " + ", ".join((["classifier"] if need_clf else []) + [f"ERD model ({k})" for k in need_erd])
            + " on the cluster (once for the whole sweep)")
        t = time.perf_counter()
        futs = {}
        if need_clf:
            futs["classifier"] = client.submit(_train_classifier_task, cfg, pin, pure=False)
        for k in need_erd:
            futs[f"erd:{k}"] = client.submit(_train_erd_task, cfg, k, pin, pure=False)
        done = client.gather(list(futs.values()))
        for name, res in zip(futs, done):
            if name == "classifier":
                models["classifier"] = res["files"]
                reports["classifier"] = res["report"]
            else:
                kind = name.split(":", 1)[1]
                models["erd"][kind] = res["bytes"]
                reports[f"erd_{kind}"] = res["report"]
        _write_models(out, models, reports)
        m = reports.get("classifier", {}).get("misclassification", float("nan"))
        log(f"models trained in {time.perf_counter() - t:.1f} s (classifier misclassification {m:.4f})")
        if m > 0.05:
            log(f"warning: the classifier misclassifies {100 * m:.0f} % of its validation spectra; "
                f"the phase maps can be no better than their labels (more --epochs?)")
    digest = hashlib.sha1(b"".join(models["classifier"][n] for n in sorted(models["classifier"]))
                          + b"".join(models["erd"][k] for k in sorted(models["erd"]))).hexdigest()[:16]
    plugin_name = f"slads-eds-sweep-models-{digest}"
    client.register_plugin(_make_plugin(plugin_name, models), name=plugin_name)
    # longest tasks first (SLADS one point per step, then batched SLADS, then static scans), so
    # that the last tasks, which leave a worker idle while another finishes, are short ones
    futures = [client.submit(_models_task, t, cfg, plugin_name, pin, key=f"sweep-{t['id']}-{digest}",
                             pure=False, priority=_task_priority(t)) for t in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo) + len(rows), initial=len(rows), desc="sweep tasks", unit="task",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for fut in as_completed(futures):
            row = fut.result()
            _atomic_write(out / ROWS_DIR / f"{row['id']}.json", _json_row(row))
            rows[row["id"]] = json.loads(_json_row(row))
            if bar is not None:
                bar.update(1)
                if row["status"] != "ok":
                    bar.write(f"task {row['id']} failed: {row['error']}")
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        if bar is not None:
            bar.close()


def _task_priority(task: dict) -> int:
    """Dask priority of a task (higher runs first): its expected cost relative to the others.
    A SLADS run one position per step does a selection per spectrum (slowest); batched
    SLADS a selection per batch; a static scan none."""
    if task["strategy"] != "slads":
        return 0
    return 2 if int(task["batch"]) <= 1 else 1
