"""EDS spectra: energy axis, reading spectrum files, reference spectra per phase.

Conventions (as in HyperSpy/exspy): a spectrum is a vector of counts over p channels;
channel ``i`` is centred at ``E_i = offset + i * scale`` in keV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ._validation import InputError, check_int, check_seed, check_spectra

__all__ = [
    "EnergyAxis",
    "Spectrum",
    "ReferenceSpectra",
    "read_spectrum",
    "bundled_standards",
    "default_standards_for",
    "make_reference_spectra",
    "add_poisson_noise",
]


@dataclass(frozen=True)
class EnergyAxis:
    """Calibration of the channel axis of an EDS spectrum.

    Parameters
    ----------
    offset_keV : float
        Energy of the centre of channel 0, in keV.
    scale_keV : float
        Channel width in keV per channel (> 0).
    size : int
        Number of channels p.
    """

    offset_keV: float
    scale_keV: float
    size: int

    def __post_init__(self):
        if not (math.isfinite(self.offset_keV) and math.isfinite(self.scale_keV)):
            raise InputError("energy axis: offset and scale must be finite numbers")
        if self.scale_keV <= 0:
            raise InputError(f"energy axis: scale must be > 0 keV/channel, got {self.scale_keV}")
        if int(self.size) != self.size or self.size < 1:
            raise InputError(f"energy axis: size must be a positive integer, got {self.size}")

    @property
    def energies(self) -> np.ndarray:
        """Channel centres, shape (size,), float64, keV."""
        return self.offset_keV + self.scale_keV * np.arange(self.size)

    def channel_of(self, energy_keV: float) -> int:
        """Index of the channel whose centre is nearest to ``energy_keV``."""
        return int(round((energy_keV - self.offset_keV) / self.scale_keV))

    def is_compatible(self, other: "EnergyAxis", tol_channels: float = 0.05) -> bool:
        """True when ``other`` has the same size and a calibration within ``tol_channels``
        of a channel over the whole axis."""
        if self.size != other.size:
            return False
        drift = abs(other.scale_keV - self.scale_keV) * self.size + abs(other.offset_keV - self.offset_keV)
        return drift <= tol_channels * self.scale_keV

    def require_compatible(self, other: "EnergyAxis", what: str = "spectrum") -> None:
        """Raise :class:`InputError` unless :meth:`is_compatible`."""
        if not self.is_compatible(other):
            raise InputError(
                f"{what}: energy axis {other.describe()} does not match the expected "
                f"{self.describe()}; resample it onto the expected axis first")

    def describe(self) -> str:
        return (f"{self.size} channels, offset {self.offset_keV:.5f} keV, "
                f"{self.scale_keV * 1000:.4f} eV/channel")

    def to_dict(self) -> dict:
        return {"offset_keV": float(self.offset_keV), "scale_keV": float(self.scale_keV),
                "size": int(self.size)}

    @classmethod
    def from_dict(cls, d: dict) -> "EnergyAxis":
        try:
            return cls(float(d["offset_keV"]), float(d["scale_keV"]), int(d["size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"energy axis: expected offset_keV, scale_keV and size, got {d!r}") from exc


@dataclass
class Spectrum:
    """One measured spectrum with its calibration.

    Attributes
    ----------
    counts : ndarray, shape (p,), float64
        Counts per channel.
    axis : EnergyAxis
    beam_energy_keV : float or None
    live_time_s : float or None
    name : str
    """

    counts: np.ndarray
    axis: EnergyAxis
    beam_energy_keV: float | None = None
    live_time_s: float | None = None
    name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        c = check_spectra(self.counts, self.axis.size, name=f"spectrum {self.name!r}")[0]
        self.counts = c.astype(np.float64)

    def fits(self, axis: EnergyAxis) -> bool:
        """Whether ``axis`` is this spectrum's axis cut short: same offset and channel width,
        and at least ``axis.size`` channels (see :meth:`on_axis`)."""
        head = EnergyAxis(self.axis.offset_keV, self.axis.scale_keV, min(self.axis.size, axis.size))
        return self.axis.size >= axis.size and axis.is_compatible(head)

    def on_axis(self, axis: EnergyAxis) -> np.ndarray:
        """Counts on ``axis``: the first ``axis.size`` channels when the calibrations agree.

        Raises
        ------
        InputError
            When the calibration differs or the spectrum has fewer channels than ``axis``.
        """
        if not self.fits(axis):
            raise InputError(
                f"spectrum {self.name!r}: its energy axis ({self.axis.describe()}) cannot be "
                f"cut to the expected axis ({axis.describe()}); it needs the same offset and "
                "channel width and at least as many channels")
        return self.counts[: axis.size].copy()


def _energy_in_keV(value: float, units: str | None, what: str, path) -> float:
    u = (units or "").strip().lower()
    if u in ("ev",):
        return float(value) / 1000.0
    if u in ("kev", ""):
        # Missing units: EMSA files without XUNITS are eV by the standard; we only
        # accept the guess when the number is plainly in eV (channel width > 0.5).
        if u == "" and abs(value) > 0.5:
            return float(value) / 1000.0
        return float(value)
    raise InputError(f"{path}: energy axis {what} in unsupported units {units!r} (expected eV or keV)")


def read_spectrum(path) -> Spectrum:
    """Read one EDS spectrum from an EMSA/MSA file (through RosettaSciIO).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    Spectrum
        Counts (p,), float64, with the file's energy axis in keV.

    Raises
    ------
    InputError
        Missing file, unreadable or corrupt file, not a single spectrum, missing calibration.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"spectrum file not found: {path}")
    if path.suffix.lower() not in (".msa", ".emsa", ".txt"):
        raise InputError(f"{path}: expected an EMSA/MSA spectrum file (.msa, .emsa)")
    from rsciio.msa import file_reader

    try:
        items = file_reader(str(path))
    except Exception as exc:  # rsciio raises many different exception types
        raise InputError(f"{path}: not a readable EMSA/MSA spectrum ({exc})") from exc
    if not items or np.asarray(items[0]["data"]).ndim != 1:
        raise InputError(f"{path}: expected a single 1-D spectrum")
    item = items[0]
    ax = item["axes"][0]
    if ax.get("scale") in (None, 0) or ax.get("offset") is None:
        raise InputError(f"{path}: the file has no energy calibration (XPERCHAN/OFFSET)")
    units = ax.get("units")
    if np.asarray(item["data"]).size == 0:
        raise InputError(f"{path}: the file holds no counts")
    try:
        axis = EnergyAxis(_energy_in_keV(ax["offset"], units, "offset", path),
                          _energy_in_keV(ax["scale"], units, "scale", path), int(ax["size"]))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    ai = (item.get("metadata") or {}).get("Acquisition_instrument") or {}
    inst = ai.get("SEM") or ai.get("TEM") or {}
    det = (inst.get("Detector") or {}).get("EDS") or {}
    title = ((item.get("metadata") or {}).get("General") or {}).get("title") or path.stem
    return Spectrum(np.asarray(item["data"], dtype=np.float64), axis,
                    beam_energy_keV=inst.get("beam_energy"), live_time_s=det.get("live_time"),
                    name=path.stem, metadata={"title": title, "file": str(path)})


# --- bundled reference standards ------------------------------------------------------

#: Fewest channels of a reference spectrum (the CNN's two pooling stages and any phase
#: contrast need many more; real EDS spectra have 1024-4096).
MIN_SPECTRUM_CHANNELS = 64
#: Plausible channel widths of an EDS spectrum, keV (a calibration outside is a unit mistake).
MIN_CHANNEL_KEV = 0.001
MAX_CHANNEL_KEV = 0.1
#: Largest expected counts of one reference spectrum (Poisson sampling needs finite means).
MAX_COUNTS_PER_SPECTRUM = 1e12

#: Bundled standards (public-domain NIST measurements, 15 kV, 60 s live time),
#: in order of increasing mean atomic number (brightness in a BSE image).
BUNDLED_STANDARDS = {
    "MgO": "nist_MgO_std_15kV.msa",
    "Al": "nist_Al_std_15kV.msa",
    "Si": "nist_Si_std_15kV.msa",
    "CaF2": "nist_CaF2_std_15kV.msa",
    "K412 glass": "nist_K412_glass_15kV.msa",
    "Fe": "nist_Fe_std_15kV.msa",
}

#: Default standard assigned to phases 1..L (ordered dark to bright) for L phases.
_DEFAULT_PHASE_STANDARDS = {
    1: ["Si"],
    2: ["Si", "Fe"],
    3: ["Al", "CaF2", "Fe"],
    4: ["MgO", "Si", "CaF2", "Fe"],
    5: ["MgO", "Al", "Si", "CaF2", "Fe"],
    6: ["MgO", "Al", "Si", "CaF2", "K412 glass", "Fe"],
}


def sample_data_dir() -> Path:
    """Folder of the bundled sample data (micrographs and spectra)."""
    return Path(str(resources.files("napari_slads_eds") / "sample_data"))


def bundled_standards() -> dict[str, Path]:
    """Name -> path of the bundled standard spectra (EMSA/MSA)."""
    d = sample_data_dir() / "spectra"
    return {name: d / fname for name, fname in BUNDLED_STANDARDS.items()}


def default_standards_for(n_phases: int) -> list[str]:
    """Names of the bundled standards used for phases 1..L by default.

    Raises
    ------
    InputError
        For L outside 1..6 (give the standards explicitly then).
    """
    try:
        return list(_DEFAULT_PHASE_STANDARDS[int(n_phases)])
    except KeyError:
        raise InputError(
            f"no default reference spectra for {n_phases} phases (1..6 are bundled); "
            "give one spectrum file per phase") from None


def default_axis(n_channels: int = 2048) -> EnergyAxis:
    """The bundled standards' axis cut to ``n_channels`` (about 0-20.5 keV at 10 eV/channel)."""
    s = read_spectrum(bundled_standards()["Si"])
    return EnergyAxis(s.axis.offset_keV, s.axis.scale_keV, int(n_channels))


@dataclass
class ReferenceSpectra:
    """Reference spectra per phase: the spectra a simulated specimen and a classifier use.

    Attributes
    ----------
    spectra : ndarray, shape (L, M, p), float64
        M reference spectra (counts) for each of the L phases.
    axis : EnergyAxis
        Energy axis of the p channels.
    phase_names : tuple of str, length L
    """

    spectra: np.ndarray
    axis: EnergyAxis
    phase_names: tuple[str, ...]

    def __post_init__(self):
        s = np.asarray(self.spectra, dtype=np.float64)
        if s.ndim != 3:
            raise InputError(f"reference spectra: expected shape (L, M, p), got {s.shape}")
        if s.shape[2] != self.axis.size:
            raise InputError(
                f"reference spectra: {s.shape[2]} channels but the energy axis has {self.axis.size}")
        if s.shape[0] < 1 or s.shape[1] < 1:
            raise InputError(f"reference spectra: need at least one phase and one spectrum, got {s.shape}")
        check_spectra(s.reshape(-1, s.shape[2]), name="reference spectra")
        empty = [i + 1 for i in range(s.shape[0]) if not s[i].sum(axis=-1).all()]
        if empty:
            raise InputError(f"reference spectra: phase(s) {empty} have spectra with no counts; "
                             "every phase needs measured spectra")
        if len(self.phase_names) != s.shape[0]:
            raise InputError(
                f"reference spectra: {len(self.phase_names)} phase names for {s.shape[0]} phases")
        self.spectra = s
        self.phase_names = tuple(str(n) for n in self.phase_names)

    @property
    def n_phases(self) -> int:
        return self.spectra.shape[0]

    @property
    def n_per_phase(self) -> int:
        return self.spectra.shape[1]

    def split(self, m: int) -> tuple["ReferenceSpectra", "ReferenceSpectra"]:
        """The first ``m`` spectra of each phase, and the rest."""
        if not 0 < m < self.n_per_phase:
            raise InputError(f"cannot split {self.n_per_phase} spectra per phase at {m}")
        return (ReferenceSpectra(self.spectra[:, :m], self.axis, self.phase_names),
                ReferenceSpectra(self.spectra[:, m:], self.axis, self.phase_names))


def make_reference_spectra(standards, *, axis: EnergyAxis | None = None, n_per_phase: int = 36,
                           counts_per_spectrum: float = 7500.0, seed: int = 0,
                           phase_names=None) -> ReferenceSpectra:
    """Noisy reference spectra per phase from one measured standard per phase.

    Each standard is cut to ``axis``, scaled to ``counts_per_spectrum`` expected counts and
    drawn ``n_per_phase`` times with Poisson counting noise, which stands in for the M spot
    spectra per phase the paper acquired (section 3.1: 24 for training/validation and 12 for
    the test object; the paper's spectra carry about 7.5k counts over 2040 channels).

    Parameters
    ----------
    standards : sequence of Spectrum or path
        One standard spectrum per phase, phase 1 first.
    axis : EnergyAxis, optional
        Target axis; default: the bundled standards' calibration with 2048 channels.
    n_per_phase : int
        M, spectra per phase.
    counts_per_spectrum : float
        Expected total counts of each reference spectrum.
    seed : int
    phase_names : sequence of str, optional
        Default: the standards' names.

    Returns
    -------
    ReferenceSpectra
        ``spectra`` of shape (L, M, p), float64 counts.

    Raises
    ------
    InputError
        No standards, a standard with no counts, or a calibration that does not match ``axis``.
    """
    stds = [s if isinstance(s, Spectrum) else read_spectrum(s) for s in standards]
    if not stds:
        raise InputError("need at least one standard spectrum (one per phase)")
    for s in stds:   # a file in keV read as eV (or the reverse) must be named, not the next one blamed
        sc, off = s.axis.scale_keV, s.axis.offset_keV
        if not (MIN_CHANNEL_KEV <= sc <= MAX_CHANNEL_KEV) or abs(off) > 2.0:
            raise InputError(f"standard {s.name!r}: implausible energy calibration ({1000 * sc:g} eV per channel, "
                             f"offset {off:g} keV); EDS spectra have {1000 * MIN_CHANNEL_KEV:g}-"
                             f"{1000 * MAX_CHANNEL_KEV:g} eV per channel and an offset within ±2 keV "
                             f"(check the file's XUNITS, XPERCHAN and OFFSET)")
    if axis is None:
        axis = EnergyAxis(stds[0].axis.offset_keV, stds[0].axis.scale_keV, min(2048, stds[0].axis.size))
        for s in stds[1:]:
            if not s.fits(axis):
                raise InputError(f"standards {stds[0].name!r} ({stds[0].axis.describe()}) and {s.name!r} "
                                 f"({s.axis.describe()}) have different energy calibrations; give standards "
                                 f"measured with the same calibration (same offset and channel width)")
    if axis.size < MIN_SPECTRUM_CHANNELS:
        raise InputError(f"standard {stds[0].name!r}: {axis.size} channels are too few to tell phases apart; "
                         f"EDS spectra have hundreds to thousands of channels (at least "
                         f"{MIN_SPECTRUM_CHANNELS} needed)")
    if not 0 < counts_per_spectrum <= MAX_COUNTS_PER_SPECTRUM:   # NaN fails too
        raise InputError(f"counts_per_spectrum must be in (0, {MAX_COUNTS_PER_SPECTRUM:.0e}], got {counts_per_spectrum}")
    check_int(n_per_phase, "n_per_phase", 1)
    rng = np.random.default_rng(check_seed(seed))
    out = np.empty((len(stds), n_per_phase, axis.size))
    shapes: list = []
    for l, s in enumerate(stds):
        c = s.on_axis(axis)
        total = c.sum()
        if not np.isfinite(total):
            raise InputError(f"standard {s.name!r}: its counts overflow (sum {total}); "
                             f"expected measured X-ray counts")
        if total <= 0:
            raise InputError(f"standard {s.name!r} has no counts on the energy axis")
        shape = c / total
        for m in range(l):
            if np.allclose(shape, shapes[m], rtol=1e-6, atol=1e-12):
                raise InputError(f"phases {m + 1} and {l + 1} have the same reference spectrum ({stds[m].name!r}, "
                                 f"{s.name!r}): no classifier can tell them apart; give one standard per "
                                 f"phase of a different composition")
        shapes.append(shape)
        out[l] = rng.poisson(c * (counts_per_spectrum / total), size=(n_per_phase, axis.size))
    names = phase_names if phase_names is not None else [s.name for s in stds]
    return ReferenceSpectra(out, axis, tuple(names))


def add_poisson_noise(spectra: np.ndarray, lam: float, rng: np.random.Generator) -> np.ndarray:
    """``spectra + Poisson(lam)`` per channel (the paper's added noise, λ = 2), float32."""
    s = np.asarray(spectra, dtype=np.float32)
    return s + rng.poisson(lam, size=s.shape).astype(np.float32)
