"""Console output shared by the command line and the replay command: progress bars from
engine messages (tqdm) and the result table.  No Qt, no TensorFlow."""

from __future__ import annotations

import sys

__all__ = ["run_with_progress"]


class _Progress:
    """tqdm bars per stage from engine messages."""

    LABELS = {"classifier": "train classifier (epochs)", "erd-database": "ERD training database",
              "c-search": "choose c (simulated runs)", "sampling": "SLADS sampling (measured)",
              "baseline": "static baselines"}

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar = None
        self.key = None
        self.best_c = None          # (c, area) of the c search so far

    def _bar(self, key, total, desc=None):
        from tqdm import tqdm

        if self.key != key or self.bar is None:
            self.close()
            self.key = key
            self.best_c = None      # a new search starts its own best
            self.bar = tqdm(total=total, desc=desc or self.LABELS.get(key, key), leave=True,
                            dynamic_ncols=True, file=sys.stderr, disable=self.quiet,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}{postfix}]")
        elif total and self.bar.total != total:
            self.bar.total = total
        return self.bar

    def __call__(self, msg: dict) -> None:
        t = msg.get("type")
        if t == "progress":
            stage = msg.get("stage", "")
            if stage == "classifier":
                key = (stage, msg.get("model", ""))
                bar = self._bar(key, msg.get("total") or None,
                                f"train {msg.get('model', 'classifier')} (epochs)")
            else:
                bar = self._bar(stage, msg.get("total") or None)
            bar.n = msg.get("done", 0)
            post = {k: msg[k] for k in ("loss", "c", "area") if k in msg}
            if stage == "c-search" and isinstance(msg.get("area"), (int, float)) and "c" in msg:
                # the bar shows the c just tried; say which is best so far (the one kept)
                best = self.best_c if self.best_c is not None and self.best_c[1] <= msg["area"] else \
                    (msg["c"], msg["area"])
                self.best_c = best
                post["best c"] = best[0]
            if post:
                bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in post.items()},
                                refresh=False)
            bar.refresh()
        elif t == "frame":
            bar = self._bar("sampling", msg.get("target") or None)
            bar.n = msg["n_measured"]
            td = msg.get("td")
            post = {"fraction": f"{100 * msg['fraction']:.1f}%", "TD": "n/a" if td is None else f"{td:.4f}"}
            if msg.get("rate"):  # frames replayed from a journal have no rate
                post["rate"] = f"{msg['rate']:.0f}/s"
            bar.set_postfix(post, refresh=False)
            bar.refresh()
        elif t == "log" and not self.quiet:
            print(msg.get("text", ""), file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.key = None


def _table(result: dict) -> str:
    g = result["grid"]
    rows = [
        ("grid", f"{g[0]} x {g[1]}"),
        ("phases", str(result["phases"])),
        ("sampled", f"{100 * result['sampling_fraction']:.2f} % ({result['n_measured']} spectra)"),
        ("TD SLADS", f"{result['td']:.5f}"),
        ("TD random (same budget)", f"{result.get('td_random', float('nan')):.5f}"),
        ("TD Halton (same budget)", f"{result.get('td_halton', float('nan')):.5f}"),
        ("misclassification (validation)", f"{result['misclassification']:.5f}"),
        ("misclassification (this run)", f"{result.get('misclassification_run', float('nan')):.5f}"),
        ("c", f"{result['c']:g}"),
    ]
    if "classifier_kind" in result:
        rows.append(("labels", f"{result['classifier_kind']} classifier, {result.get('uncertainty', 'hard')} decisions"))
    if isinstance(result.get("dose"), dict):
        d = result["dose"]
        rows.append(("dose (total dwell)", f"{d['total_dwell']:.1f} x a full raster's dwell per pixel "
                                           f"({100 * d['fraction_of_full_raster']:.1f} % of a full raster)"))
    rows += [
        ("stopped because", result.get("stop_reason", "")),
        # (the header line gives this command's wall time)
        ("compute seconds", f"{result['seconds']:.1f} (training + sampling, over all sessions of the run)"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"  {a:<{w}}  {b}" for a, b in rows)


def run_with_progress(quiet: bool, fn, *args, **kwargs):
    """``fn(*args, on_message=<progress bars>, **kwargs)``, closing the bars however it ends."""
    prog = _Progress(quiet)
    try:
        return fn(*args, on_message=prog, **kwargs)
    finally:
        prog.close()
