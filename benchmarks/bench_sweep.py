"""Benchmark and checks of ``slads-eds sweep`` on this machine (issue 13, "Done when").

1. The sweep (3 micrographs x 3 fractions x 3 strategies x 3 seeds) on a local Dask cluster
   of 2 worker processes, training included: table A.
2. The same sweep on a separately started ``dask scheduler`` + 2 ``dask worker`` processes
   (loopback only), training included: table B; A and B must hold the same numbers.
3. Wall time of the 27 tasks with the models already trained (copied into a fresh output
   folder): a 1-worker cluster (the tasks one after another) against 2 workers.
4. A worker of the external cluster killed (SIGKILL, the worker process under its nanny)
   mid-sweep: the rows finished before the kill must be unchanged and the sweep complete,
   with the same numbers as A.

Micrographs: the two bundled ones and the BSE image of the shared Bruker map P45
(75x100, interpolated 4x to 300x400 so that a 64x64 grid at down-sampling 2 fits twice);
P45 needs the shared data (``$SLADS_EDS_SHARED_DATA`` or ../shared/data).

Usage::

    nice -n 10 python benchmarks/bench_sweep.py [--size 64] [--out docs/benchmark_sweep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NUMERIC = ["td_0.05", "td_0.1", "td_0.2", "fraction_at_target", "spectra", "misclassification_run"]


def _images(tmp: Path, p45_scale: int = 4) -> list[str]:
    import imageio.v3 as iio
    from skimage.transform import rescale

    from napari_slads_eds.spectra import sample_data_dir

    shared = Path(os.environ.get("SLADS_EDS_SHARED_DATA", REPO.parent / "shared" / "data"))
    z = np.load(shared / "eds_map_bruker_P45.npz")
    bse = rescale(z["image_BSE_100x75"].astype(float), p45_scale, order=1, preserve_range=True)
    bse = np.round(255 * (bse - bse.min()) / (bse.max() - bse.min())).astype(np.uint8)
    p45 = tmp / f"p45_bse_x{p45_scale}.png"
    iio.imwrite(p45, bse)
    d = sample_data_dir()
    return [str(d / "sem_nanoporous_gold_inlens.png"), str(d / "sem_glass_sand_bubbles_bse.png"), str(p45)]


def _same(a, b) -> bool:
    a = a.sort_values("id").reset_index(drop=True)
    b = b.sort_values("id").reset_index(drop=True)
    return (list(a["id"]) == list(b["id"]) and list(a["status"]) == list(b["status"])
            and np.array_equal(a[NUMERIC].to_numpy(float), b[NUMERIC].to_numpy(float), equal_nan=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExternalCluster:
    """``dask scheduler`` and 2 ``dask worker`` processes on 127.0.0.1 (started and ended here)."""

    def __init__(self, n_workers: int = 2):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        self.logs = tempfile.TemporaryDirectory()
        lg = Path(self.logs.name)
        self.scheduler = subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(self.port),
                                                  "--no-dashboard"],
                                          env=env, stdout=open(lg / "s.out", "w"), stderr=subprocess.STDOUT)
        time.sleep(3)
        self.workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", self.address,
                                          "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                                          "--no-dashboard", "--name", f"ext-{i}"],
                                         env=env, stdout=open(lg / f"w{i}.out", "w"), stderr=subprocess.STDOUT)
                        for i in range(n_workers)]
        from distributed import Client

        with Client(self.address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=120)

    def worker_process(self, i: int) -> int:
        """pid of worker i's worker process (the child of its nanny)."""
        import psutil

        kids = psutil.Process(self.workers[i].pid).children()
        cmd = {k.pid: " ".join(k.cmdline()) for k in kids}
        work = [p for p, c in cmd.items() if "spawn_main" in c and "resource_tracker" not in c]
        if not work:
            raise RuntimeError(f"no worker process under nanny {self.workers[i].pid}: {cmd}")
        return work[0]

    def close(self) -> None:
        for p in self.workers + [self.scheduler]:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.workers + [self.scheduler]:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.logs.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmark_sweep.json"))
    ap.add_argument("--p45-scale", type=int, default=4,
                    help="interpolation factor of the P45 BSE image (75x100); 6 gives a 128x128 region at down-sampling 2")
    ap.add_argument("--keep", default=None, help="keep the sweep folders here (default: a temporary folder)")
    a = ap.parse_args()

    from napari_slads_eds import sweep

    tmp = Path(a.keep or tempfile.mkdtemp(prefix="bench-sweep-"))
    tmp.mkdir(parents=True, exist_ok=True)
    images = _images(tmp, a.p45_scale)
    common = dict(fractions=(0.05, 0.1, 0.2), strategies=("slads", "halton", "random"), seeds=tuple(a.seeds),
                  size=a.size, downsample=2)
    report = {"images": images, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in common.items()},
              "cpu_count": os.cpu_count(), "load_average_start": os.getloadavg()}

    def timed(name, **kw):
        t = time.perf_counter()
        table = sweep(images, 2, out=tmp / name, **common, **kw)
        dt = time.perf_counter() - t
        print(f"{name}: {dt:.1f} s, {int((table['status'] == 'ok').sum())}/{len(table)} ok", flush=True)
        return table, dt

    # 1. local cluster, 2 workers, training included
    table_a, t_a = timed("local-2", workers=2)
    report["local_2_workers_with_training_s"] = t_a
    report["n_tasks"] = len(table_a)
    report["n_ok"] = int((table_a["status"] == "ok").sum())
    report["task_seconds_sum"] = float(table_a["seconds"].sum())

    def with_models(name):
        (tmp / name).mkdir(parents=True, exist_ok=True)
        shutil.copytree(tmp / "local-2" / "models", tmp / name / "models")
        shutil.copy(tmp / "local-2" / "sweep.json", tmp / name / "sweep.json")
        (tmp / name / "rows").mkdir()

    # 3. the tasks alone (models trained already): 1 worker (one after another; unbound, so a
    #    task may use both cores through its threads, and bound to one core) against 2 workers
    #    (each bound to a core of its own); interleaved and repeated, the machine being shared
    runs: dict = {"1 worker, unbound": [], "1 worker, 1 core": [], "2 workers, 1 core each": []}
    same = True
    for rep in range(a.repeats):
        for label, kw in (("1 worker, unbound", dict(workers=1, pin_cores=False)),
                          ("1 worker, 1 core", dict(workers=1)),
                          ("2 workers, 1 core each", dict(workers=2))):
            name = f"tasks-{label.replace(' ', '').replace(',', '-')}-{rep}"
            with_models(name)
            table, dt = timed(name, **kw)
            runs[label].append(dt)
            same = same and _same(table_a, table)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    report.update(tasks_runs_s=runs, tasks_median_s=med, tasks_same_numbers=same,
                  ratio_2_vs_1_unbound=med["2 workers, 1 core each"] / med["1 worker, unbound"],
                  ratio_2_vs_1_core=med["2 workers, 1 core each"] / med["1 worker, 1 core"])
    print(f"medians {med}; 2 workers / 1 worker unbound {report['ratio_2_vs_1_unbound']:.2f}, "
          f"/ 1 worker on 1 core {report['ratio_2_vs_1_core']:.2f}", flush=True)

    # 2. external dask scheduler + 2 dask worker processes, training included
    ext = ExternalCluster(2)
    try:
        table_b, t_b = timed("external-2", scheduler=ext.address)
        report.update(external_2_workers_with_training_s=t_b, external_same_numbers=_same(table_a, table_b))
        print(f"local and external tables the same: {report['external_same_numbers']}", flush=True)

        # 4. kill a worker mid-sweep (models trained already)
        with_models("killed")
        rows_dir = tmp / "killed" / "rows"
        before: dict = {}
        killed = {}

        def killer():
            while len(list(rows_dir.glob("*.json"))) < 6:
                time.sleep(0.05)
            for p in rows_dir.glob("*.json"):
                before[p.name] = p.read_bytes()
            pid = ext.worker_process(0)
            os.kill(pid, signal.SIGKILL)
            killed.update(pid=pid, at_rows=len(before), time=time.time())

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        table_k, t_k = timed("killed", scheduler=ext.address)
        th.join(5)
        unchanged = all((rows_dir / n).read_bytes() == b for n, b in before.items())
        report.update(kill={"killed_worker_pid": killed.get("pid"), "rows_before_kill": killed.get("at_rows"),
                            "finished_rows_unchanged": unchanged, "rows_after": len(table_k),
                            "ok_after": int((table_k["status"] == "ok").sum()),
                            "same_numbers_as_local": _same(table_a, table_k), "seconds": t_k,
                            "workers_seen": sorted(set(table_k["worker"]))})
        print(f"kill: {report['kill']}", flush=True)
    finally:
        ext.close()
    report["load_average_end"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {a.out}; folders in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
