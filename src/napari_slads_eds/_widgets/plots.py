"""Matplotlib plots for dock widgets: the TD curve of a run, a spectrum on an energy axis
in keV, and the grey-level histogram with multi-Otsu thresholds.

Uses ``matplotlib.figure.Figure`` with the QtAgg canvas directly (no pyplot, no global
state); colours follow the napari theme.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QTabWidget, QVBoxLayout, QWidget

__all__ = ["PlotCanvas", "TDCurvePlot", "SpectrumPlot", "HistogramPlot", "PlotsDock"]

#: Earlier runs kept (greyed) on the TD plot for comparison.
EARLIER_RUNS = 4

# (line style, label, colour): the static scans in blue and violet, SLADS in orange, so that
# the three stay apart on a projector (and in grey-scale, by their line styles)
_BASELINE_STYLE = {"random": ("--", "static random", "#4cc9f0"), "halton": (":", "static Halton", "#c77dff")}


def _theme_colours() -> dict:
    try:
        from napari.settings import get_settings
        from napari.utils.theme import get_theme

        name = get_settings().appearance.theme
        if name == "system":
            name = "dark"
        t = get_theme(name)
        return {"bg": t.background.as_hex(), "fg": t.text.as_hex(), "grid": t.highlight.as_hex()}
    except Exception:  # napari absent or theme API changed: matplotlib defaults
        return {"bg": "#ffffff", "fg": "#000000", "grid": "#b0b0b0"}


class PlotCanvas(QWidget):
    """A QWidget holding one matplotlib axes, styled like the napari theme."""

    #: Redraws closer together than this (seconds) are merged (0: draw on every change).
    min_redraw_interval = 0.0

    def __init__(self, parent=None, *, figsize=(4.0, 2.6), min_height=160,
                 margins=(0.16, 0.2, 0.97, 0.88)):
        super().__init__(parent)
        self.colours = _theme_colours()
        # fixed margins: a layout engine re-measures every text on every draw (slow)
        self.figure = Figure(figsize=figsize, dpi=90, facecolor=self.colours["bg"])
        left, bottom, right, top = margins
        self.figure.subplots_adjust(left=left, bottom=bottom, right=right, top=top)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setMinimumHeight(min_height)
        self.canvas.setMinimumWidth(160)    # shrinks with a narrow dock (no horizontal scrolling)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas)
        self.ax = self.figure.add_subplot(111)
        self._style()
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.timeout.connect(self.canvas.draw_idle)
        self.draws_requested = 0

    def _style(self) -> None:
        ax, c = self.ax, self.colours
        ax.set_facecolor(c["bg"])
        for side in ax.spines.values():
            side.set_color(c["fg"])
        ax.tick_params(colors=c["fg"], labelsize=8)
        ax.xaxis.label.set_color(c["fg"])
        ax.yaxis.label.set_color(c["fg"])
        ax.title.set_color(c["fg"])
        ax.title.set_fontsize(9)
        ax.grid(True, color=c["grid"], alpha=0.4, lw=0.5)

    def _legend(self) -> None:
        leg = self.ax.legend(fontsize=7, facecolor=self.colours["bg"], edgecolor=self.colours["grid"])
        for t in leg.get_texts():
            t.set_color(self.colours["fg"])

    def redraw(self, now: bool = False) -> None:
        """Redraw soon; with ``min_redraw_interval`` changes in quick succession are merged."""
        self.draws_requested += 1
        if now or self.min_redraw_interval <= 0:
            self._redraw_timer.stop()
            self.canvas.draw_idle()
        elif not self._redraw_timer.isActive():
            self._redraw_timer.start(int(1000 * self.min_redraw_interval))


class TDCurvePlot(PlotCanvas):
    """TD (fraction of wrongly reconstructed pixels) versus sampling fraction (%):
    the SLADS run, live, against the static random and Halton scans.

    Live points are drawn at most once a second: a matplotlib draw costs tens of ms of the
    GUI thread, which competes with the engine process for the CPU.
    """

    min_redraw_interval = 1.0

    def __init__(self, parent=None):
        super().__init__(parent, margins=(0.15, 0.24, 0.97, 0.95))
        #: SLADS curves of earlier runs (x in %, y), oldest first, drawn grey
        self.earlier: list[tuple[list, list]] = []
        self._x: list[float] = []
        self._y: list[float] = []
        self.clear()

    def clear(self, target_fraction: float | None = None) -> None:
        """Start the plot of a new run.  The SLADS curve of the run before (if it has points)
        joins the earlier runs, drawn grey under the new one (at most :data:`EARLIER_RUNS`)."""
        if len(self._x) > 1:
            self.earlier = (self.earlier + [(list(self._x), list(self._y))])[-EARLIER_RUNS:]
        ax = self.ax
        ax.clear()
        self._style()
        ax.set_xlabel("sampling fraction (%)", fontsize=8)
        ax.set_ylabel("TD", fontsize=8)
        ax.set_yscale("symlog", linthresh=1e-3)
        self.earlier_lines = []
        for i, (x, y) in enumerate(self.earlier):
            (line,) = ax.plot(x, y, lw=1.2, color="#9a9a9a", alpha=0.35 + 0.4 * (i + 1) / len(self.earlier),
                              label="earlier runs" if i == len(self.earlier) - 1 else "_nolegend_")
            self.earlier_lines.append(line)
        self._x, self._y = [], []
        self.marker = None
        (self.slads_line,) = ax.plot([], [], lw=2, color="#ff9f1c", label="SLADS")
        self.baselines: dict[str, object] = {}
        self._target = target_fraction
        if target_fraction:
            ax.axvline(100 * target_fraction, color=self.colours["grid"], lw=1)
        self._rescale()
        self._legend()
        self.redraw(now=True)

    def set_baseline(self, name: str, curve) -> None:
        """A static scan's curve: [[fraction, td], ...]."""
        c = np.asarray(curve, dtype=float).reshape(-1, 2)
        style, label, colour = _BASELINE_STYLE.get(name, ("-.", f"static {name}", "#8d99ae"))
        if name in self.baselines:
            self.baselines[name].set_data(100 * c[:, 0], c[:, 1])
        else:
            (self.baselines[name],) = self.ax.plot(100 * c[:, 0], c[:, 1], style, marker="o", ms=3,
                                                   lw=1.2, color=colour, label=label)
        self._rescale()
        self._legend()
        self.redraw()

    def append(self, fraction: float, td: float | None) -> None:
        """One more point of the SLADS curve."""
        if td is None:
            return
        self._x.append(100 * float(fraction))
        self._y.append(float(td))
        self.slads_line.set_data(self._x, self._y)
        self._rescale()
        self.redraw()

    def set_curve(self, curve) -> None:
        """The whole SLADS curve ([[fraction, td], ...], every step) at the end of a run."""
        c = np.asarray(curve, dtype=float).reshape(-1, 2)
        self._x = list(100 * c[:, 0])
        self._y = list(c[:, 1])
        self.slads_line.set_data(self._x, self._y)
        self._rescale()
        self.redraw(now=True)

    def mark_fraction(self, fraction: float | None) -> None:
        """A vertical marker at ``fraction`` (0-1; the replay's step), or none."""
        line = getattr(self, "marker", None)
        if fraction is None:
            if line is not None:
                line.remove()
                self.marker = None
                self.redraw()
            return
        x = 100 * float(fraction)
        if line is None:
            self.marker = self.ax.axvline(x, color=self.colours["fg"], lw=1.2, ls="-", label="_replay step")
        else:
            self.marker.set_xdata([x, x])
        self.redraw()

    @property
    def slads_points(self) -> int:
        return len(self._x)

    def _rescale(self) -> None:
        self.ax.relim()
        self.ax.autoscale_view()
        lo, hi = self.ax.get_ylim()
        # symlog autoscaling can end below the largest TD (the first points of a run): the
        # axis always reaches a bit above every curve's largest value
        ys = [v for v in self._y if np.isfinite(v)]
        ys += [float(np.nanmax(line.get_ydata())) for line in self.baselines.values() if len(line.get_ydata())]
        ys += [max(y) for _, y in self.earlier if y]
        self.ax.set_ylim(0, max(hi, 1.25 * max(ys, default=0.0), 1e-3))
        if getattr(self, "_target", None):    # the x axis ends at the run's target (or an earlier run's)
            xmax = max([100 * self._target] + [max(x) for x, _ in self.earlier if x])
            self.ax.set_xlim(0, xmax * 1.02)


class SpectrumPlot(PlotCanvas):
    """Counts versus energy (keV) of one spectrum, with its phase's mean reference."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.ax.set_xlabel("energy (keV)", fontsize=8)
        self.ax.set_ylabel("counts", fontsize=8)
        self.title = ""

    def show_spectrum(self, energies_keV, counts, title: str = "", reference=None,
                      reference_label: str = "mean reference", xmax_keV: float | None = None) -> None:
        ax = self.ax
        ax.clear()
        self._style()
        e = np.asarray(energies_keV, dtype=float)
        if reference is not None:
            ax.plot(e, np.asarray(reference, dtype=float), lw=1.6, color="#ff9f1c", alpha=0.6,
                    label=reference_label)
        ax.plot(e, np.asarray(counts, dtype=float), lw=0.7, color="#4cc9f0", label="measured spectrum")
        ax.set_xlabel("energy (keV)", fontsize=8)
        ax.set_ylabel("counts", fontsize=8)
        ax.set_xlim(e[0], xmax_keV if xmax_keV else e[-1])
        ax.set_title(title)
        self.title = title
        self._legend()
        self.redraw()


class HistogramPlot(PlotCanvas):
    """Grey-level histogram with the thresholds between phases."""

    def __init__(self, parent=None):
        super().__init__(parent, figsize=(3.6, 1.8), min_height=120, margins=(0.04, 0.3, 0.97, 0.85))
        self.ax.set_yticks([])
        self.ax.set_xlabel("grey level", fontsize=8)
        self.thresholds = np.zeros(0)

    def show_histogram(self, values, thresholds, title: str = "") -> None:
        ax = self.ax
        ax.clear()
        self._style()
        v = np.asarray(values, dtype=float).ravel()
        hist, edges = np.histogram(v, bins=128)
        ax.stairs(hist, edges, fill=True, color="#8d99ae", alpha=0.8)
        for i, t in enumerate(np.asarray(thresholds, dtype=float).ravel()):
            ax.axvline(t, color="#ff9f1c", lw=1.2)
        th = np.concatenate([[edges[0]], np.asarray(thresholds, dtype=float).ravel(), [edges[-1]]])
        top = hist.max() if hist.size else 1
        for l in range(len(th) - 1):
            ax.text(0.5 * (th[l] + th[l + 1]), 0.92 * top, str(l + 1), ha="center", va="top",
                    fontsize=8, color=self.colours["fg"])
        ax.set_yticks([])
        ax.set_xlabel("grey level", fontsize=8)
        ax.set_title(title)
        self.thresholds = np.asarray(thresholds, dtype=float).ravel()
        self.redraw()


class PlotsDock(QWidget):
    """The "Plots" dock: the TD curve and the spectrum plot as two tabs of one dock, with a
    minimum height, so that opening one never squeezes the workflow dock a second time.

    Attributes
    ----------
    td : TDCurvePlot
    spectrum : SpectrumPlot
    tabs : QTabWidget
    """

    #: Minimum height (px) of the plot area.
    min_plot_height = 200

    def __init__(self, parent=None):
        super().__init__(parent)
        self.tabs = QTabWidget()
        self.td = TDCurvePlot()
        self.spectrum = SpectrumPlot()
        for w in (self.td, self.spectrum):
            w.canvas.setMinimumHeight(self.min_plot_height)
        self.tabs.addTab(self.td, "TD curve")
        self.tabs.addTab(self.spectrum, "Spectrum")
        self.tabs.setToolTip("TD curve: total distortion against the sampling fraction, SLADS and the static "
                             "scans.  Spectrum: the spectrum of the last clicked pixel of the ground truth.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)

    def plot(self, kind: str):
        """The "td" or "spectrum" plot."""
        try:
            return {"td": self.td, "spectrum": self.spectrum}[kind]
        except KeyError:
            raise ValueError(f"unknown plot {kind!r}: expected 'td' or 'spectrum'") from None

    def show_tab(self, kind: str) -> None:
        self.tabs.setCurrentWidget(self.plot(kind))
