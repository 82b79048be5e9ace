"""The spot-spectrum protocol of a microscope on the network: its data, encoding and checks.

The protocol (version 1, every path under ``/v1``; the OpenAPI schema is in
``docs/microscope_openapi.json``, the prose in ``docs/microscope.md``):

``GET /v1/info``
    Grid shape (rows, cols), pixel size (nm), energy axis (offset keV, keV/channel,
    channels), beam energy (keV), dwell limits (s) and the largest batch.
``POST /v1/measure``
    ``{"request_id", "positions": [[row, col], ...], "dwell_s"}`` -> the spectra at those
    positions as little-endian float32 counts, row-major (n, p), base64-encoded, with the
    live time (s) of each spectrum and the energy axis they are calibrated on.  A request
    is idempotent by ``request_id``: asked again (a retry after a dropped reply), a server
    answers with the same spectra without moving the beam again.
``GET /v1/health``
    ``{"status": "ok", "busy": bool}``; no authentication.
``POST /v1/cancel``
    Cancels the measurement under way (its request is answered with HTTP 409).

Authentication: ``Authorization: Bearer <token>`` when the server has a token.

This module owns what client and server share, without any networking: the protocol's
name, version and path prefix, the errors (:class:`MicroscopeError` and its kinds), what
the acquisition loop needs of an instrument (:class:`Microscope`), the ``counts``
encoding (:func:`encode_counts`, :func:`decode_counts`), the ``/v1/info`` reply
(:class:`MicroscopeInfo`, :func:`parse_info`), the check of a ``/v1/measure`` reply
against its request (:func:`check_measure_reply`) and the check that a classifier can
sample a microscope (:func:`check_microscope_for_classifier`).  The HTTP client is
:mod:`napari_slads_eds.microscope`, the server :mod:`napari_slads_eds.server`.
numpy only: no httpx, no Qt, no TensorFlow.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ._validation import InputError
from .spectra import EnergyAxis

__all__ = ["PROTOCOL", "PROTOCOL_VERSION", "API_PREFIX", "Microscope", "MicroscopeInfo",
           "MicroscopeError", "MicroscopeReplyError", "MicroscopeRefused", "MicroscopeUnavailable",
           "encode_counts", "decode_counts", "parse_info", "check_measure_reply",
           "check_microscope_for_classifier"]

PROTOCOL = "slads-eds-microscope"
PROTOCOL_VERSION = 1
API_PREFIX = "/v1"
#: Channels a spectrum may have (a sanity bound on what a server announces).
MAX_CHANNELS = 1 << 16


class MicroscopeError(InputError):
    """Something is wrong with the microscope or its link (base of the errors below)."""


class MicroscopeReplyError(MicroscopeError):
    """The microscope answered, but the reply is malformed (the message names the field)."""


class MicroscopeRefused(MicroscopeError):
    """The microscope refused the request (wrong token, bad request: HTTP 4xx)."""


class MicroscopeUnavailable(MicroscopeError):
    """The microscope did not answer within the outage timeout."""


@runtime_checkable
class Microscope(Protocol):
    """What the acquisition loop needs of an instrument (a specimen has the same shape).

    Attributes
    ----------
    shape : (rows, cols)
        The sampling grid.
    n_phases : int
        L, the phases the run's classifier knows.
    axis : EnergyAxis
        Calibration of the spectra ``measure`` returns.
    """

    shape: tuple
    n_phases: int
    axis: EnergyAxis

    def measure(self, positions) -> np.ndarray:
        """Spectra (n, p) float32 counts at ``positions`` (n, 2) int (row, col)."""
        ...


# ------------------------------------------------------------------------- encoding

def encode_counts(spectra) -> str:
    """Spectra (n, p) as base64 of little-endian float32, row-major (the ``counts`` field)."""
    a = np.ascontiguousarray(np.asarray(spectra, dtype="<f4"))
    return base64.b64encode(a.tobytes()).decode("ascii")


def decode_counts(text, n: int, p: int, *, field: str = "counts") -> np.ndarray:
    """Decode the ``counts`` field into (n, p) float32 and check it.

    Raises
    ------
    MicroscopeReplyError
        Not base64 text, a length other than n * p float32 values, NaN/inf or negative counts.
    """
    if not isinstance(text, str):
        raise MicroscopeReplyError(f"microscope reply: field '{field}' must be base64 text, got {type(text).__name__}")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MicroscopeReplyError(f"microscope reply: field '{field}' is not valid base64") from None
    if len(raw) != 4 * n * p:
        got = len(raw) / 4
        raise MicroscopeReplyError(
            f"microscope reply: field '{field}' holds {got:g} float32 values, expected {n} spectra x {p} "
            f"channels = {n * p}")
    a = np.frombuffer(raw, dtype="<f4").reshape(n, p).astype(np.float32)
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise MicroscopeReplyError(f"microscope reply: field '{field}' has NaN or infinite counts (spectrum {bad})")
    if (a < 0).any():
        bad = int(np.flatnonzero((a < 0).any(axis=1))[0])
        raise MicroscopeReplyError(f"microscope reply: field '{field}' has negative counts (spectrum {bad})")
    return a


# ------------------------------------------------------------------------------ info

@dataclass(frozen=True)
class MicroscopeInfo:
    """What ``GET /v1/info`` says about the instrument.

    Attributes
    ----------
    shape : (rows, cols)
    axis : EnergyAxis
        offset keV, keV/channel, channels.
    pixel_size_nm : float or None
    beam_energy_keV : float or None
    dwell_min_s, dwell_max_s, dwell_default_s : float
        Dwell time limits and default, seconds per spot.
    max_batch : int
        Most positions one ``POST /v1/measure`` may ask for.
    name : str
    """

    shape: tuple
    axis: EnergyAxis
    pixel_size_nm: float | None
    beam_energy_keV: float | None
    dwell_min_s: float
    dwell_max_s: float
    dwell_default_s: float
    max_batch: int
    name: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["axis"] = self.axis.to_dict()
        d["shape"] = list(self.shape)
        return d

    def describe(self, dwell_s: float | None = None) -> str:
        """One line for a status display, e.g. ``'demo': 128 x 128 grid, energy axis 2048
        channels, offset 0.00352 keV, 10.0122 eV/channel, dwell 0.02 s (0-60 s), beam 15 keV``.

        Parameters
        ----------
        dwell_s : float, optional
            The dwell time (s per spot) a run will use (default: the microscope's default).
        """
        d = self.dwell_default_s if dwell_s is None else float(dwell_s)
        rows, cols = self.shape
        parts = [f"{rows} x {cols} grid" + (f" of {self.pixel_size_nm:g} nm" if self.pixel_size_nm else ""),
                 f"energy axis {self.axis.describe()}",
                 f"dwell {d:g} s per spot ({self.dwell_min_s:g}-{self.dwell_max_s:g} s)"]
        if self.beam_energy_keV:
            parts.append(f"beam {self.beam_energy_keV:g} keV")
        return (f"'{self.name}': " if self.name else "") + ", ".join(parts)


def _reply_error(field: str, what: str) -> MicroscopeReplyError:
    return MicroscopeReplyError(f"microscope info: field '{field}' {what}")


def _num(d: dict, key: str, field: str, *, positive=False, optional=False, integer=False):
    if key not in d:
        raise _reply_error(field, "is missing")
    v = d[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise _reply_error(field, f"must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v) or (positive and v <= 0) or v < 0:
        raise _reply_error(field, f"must be a finite {'positive' if positive else 'non-negative'} number, got {v!r}")
    return int(v) if integer else float(v)


def parse_info(d) -> MicroscopeInfo:
    """Check a ``GET /v1/info`` reply and return it as :class:`MicroscopeInfo`.

    Raises
    ------
    MicroscopeReplyError
        Another protocol or version, a missing or malformed field (named in the message).
    """
    if not isinstance(d, dict):
        raise MicroscopeReplyError(f"microscope info: expected a JSON object, got {type(d).__name__}")
    if d.get("protocol") != PROTOCOL:
        raise _reply_error("protocol", f"is {d.get('protocol')!r}, expected {PROTOCOL!r} (is this a "
                                       f"slads-eds microscope server?)")
    if d.get("version") != PROTOCOL_VERSION:
        raise _reply_error("version", f"is {d.get('version')!r}; this client speaks version {PROTOCOL_VERSION}")
    grid = d.get("grid")
    if not isinstance(grid, dict):
        raise _reply_error("grid", "must be an object with rows and cols")
    rows = _num(grid, "rows", "grid.rows", positive=True, integer=True)
    cols = _num(grid, "cols", "grid.cols", positive=True, integer=True)
    ea = d.get("energy_axis")
    if not isinstance(ea, dict):
        raise _reply_error("energy_axis", "must be an object with offset_keV, scale_keV_per_channel and channels")
    off = ea.get("offset_keV")
    if isinstance(off, bool) or not isinstance(off, (int, float)) or not math.isfinite(off):
        raise _reply_error("energy_axis.offset_keV", f"must be a finite number, got {off!r}")
    scale = _num(ea, "scale_keV_per_channel", "energy_axis.scale_keV_per_channel", positive=True)
    p = _num(ea, "channels", "energy_axis.channels", positive=True, integer=True)
    if p > MAX_CHANNELS:
        raise _reply_error("energy_axis.channels", f"is {p}, more than {MAX_CHANNELS}")
    dw = d.get("dwell_s")
    if not isinstance(dw, dict):
        raise _reply_error("dwell_s", "must be an object with min, max and default (seconds)")
    dmin = _num(dw, "min", "dwell_s.min")
    dmax = _num(dw, "max", "dwell_s.max", positive=True)
    ddef = _num(dw, "default", "dwell_s.default", positive=True)
    if not dmin <= ddef <= dmax:
        raise _reply_error("dwell_s", f"default {ddef} s is not within min {dmin} s .. max {dmax} s")
    return MicroscopeInfo(
        shape=(rows, cols), axis=EnergyAxis(float(off), scale, p),
        pixel_size_nm=_num(d, "pixel_size_nm", "pixel_size_nm", positive=True, optional=True),
        beam_energy_keV=_num(d, "beam_energy_keV", "beam_energy_keV", positive=True, optional=True),
        dwell_min_s=dmin, dwell_max_s=dmax, dwell_default_s=ddef,
        max_batch=_num(d, "max_batch", "max_batch", positive=True, integer=True),
        name=str(d.get("name", "")))


def check_measure_reply(d, request_id: str, positions: np.ndarray, axis: EnergyAxis):
    """Check a ``POST /v1/measure`` reply against its request.

    Parameters
    ----------
    d : dict
        The decoded JSON reply.
    request_id : str
        The request's id (the reply must echo it).
    positions : ndarray (n, 2) int
        The positions asked for; the reply must list exactly these, in this order.
    axis : EnergyAxis
        The calibration announced by ``/v1/info``; the reply's must be the same.

    Returns
    -------
    spectra : ndarray (n, p) float32, counts
    live_time_s : ndarray (n,) float64, seconds

    Raises
    ------
    MicroscopeReplyError
        One line naming the field: ``request_id``, ``positions`` (other positions or
        another order), ``energy_axis`` (another calibration), ``counts`` (wrong length,
        NaN or negative counts, bad base64), ``live_time_s``.
    """
    def bad(field, what):
        return MicroscopeReplyError(f"microscope reply: field '{field}' {what}")

    if not isinstance(d, dict):
        raise MicroscopeReplyError(f"microscope reply: expected a JSON object, got {type(d).__name__}")
    for key in ("request_id", "positions", "energy_axis", "counts", "live_time_s"):
        if key not in d:
            raise bad(key, "is missing")
    if d["request_id"] != request_id:
        raise bad("request_id", f"is {str(d['request_id'])[:40]!r}, expected {request_id!r} (a reply to another request)")
    n = len(positions)
    try:
        raw = np.asarray(d["positions"])
        got = raw.astype(np.int64)
        ok_shape = ((got.shape == (n, 2) and raw.dtype.kind in "iu") or (n == 0 and got.size == 0))
    except (TypeError, ValueError, OverflowError):
        ok_shape = False
    if not ok_shape:
        raise bad("positions", f"must be the {n} [row, col] pairs that were asked for")
    got = got.reshape(n, 2)
    if not np.array_equal(got, positions):
        i = int(np.flatnonzero((got != positions).any(axis=1))[0])
        raise bad("positions", f"has [{got[i, 0]}, {got[i, 1]}] at index {i}, where [{positions[i, 0]}, "
                               f"{positions[i, 1]}] was asked for")
    ea = d["energy_axis"]
    try:
        rax = EnergyAxis(float(ea["offset_keV"]), float(ea["scale_keV_per_channel"]), int(ea["channels"]))
    except (KeyError, TypeError, ValueError, InputError):
        raise bad("energy_axis", "must have offset_keV, scale_keV_per_channel and channels") from None
    if rax != axis:
        raise bad("energy_axis", f"is {rax.describe()}, but /v1/info announced {axis.describe()}")
    spectra = decode_counts(d["counts"], n, axis.size)
    try:
        lt = np.asarray(d["live_time_s"], dtype=np.float64)
    except (TypeError, ValueError):
        lt = np.zeros(0)
    if lt.shape != (n,):
        raise bad("live_time_s", f"must be {n} numbers (seconds, one per spectrum)")
    if not np.isfinite(lt).all() or (lt < 0).any():
        raise bad("live_time_s", "has NaN, infinite or negative values")
    return spectra, lt


def check_microscope_for_classifier(info: MicroscopeInfo, classifier: dict | None = None, *,
                                    dwell_s: float | None = None, truth=None) -> float:
    """Check that a SLADS run with this classifier can sample this microscope, before any
    spot is measured.

    Parameters
    ----------
    info : MicroscopeInfo
        What the microscope's ``/v1/info`` says (:func:`~napari_slads_eds.microscope.read_microscope_info`).
    classifier : path or dict, optional
        The classifier folder (its ``classifier.json`` is read; no model is loaded), or
        that description as a dict: ``"axis"`` (``offset_keV``, ``scale_keV``, ``size``:
        the energy axis it was trained on) and ``"phase_names"`` (its L phases).  None:
        only the dwell time and the ground truth are checked.
    dwell_s : float, optional
        Dwell time per spot in seconds; None or 0: the microscope's default.
    truth : specimen, optional
        The ground truth of what the microscope measures, when it is known (a simulated
        specimen served by ``slads-eds serve``): its ``shape`` (rows, cols) and
        ``n_phases`` must be the microscope's grid and the classifier's L.

    Returns
    -------
    float
        The dwell time (s per spot) the run will use.

    Raises
    ------
    MicroscopeError
        One line saying what was expected: the microscope's energy axis is not the one
        the classifier was trained on (channels, offset or keV/channel differ by more than
        0.05 channel over the axis), the dwell time is outside the microscope's limits, or
        the ground truth has another grid than the microscope or another phase count
        than the classifier.
    InputError
        A classifier folder without a readable ``classifier.json``, or a description
        without a valid ``axis`` or ``phase_names``.
    """
    if classifier is not None and not isinstance(classifier, dict):
        import json
        from pathlib import Path

        f = Path(classifier) / "classifier.json"
        try:
            classifier = json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{f}: not a readable classifier description ({exc})") from None
        if not isinstance(classifier, dict):
            raise InputError(f"{f}: not a classifier description (expected a JSON object)")
    if classifier is not None:
        try:
            trained = EnergyAxis.from_dict(classifier["axis"])
            names = list(classifier["phase_names"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"the classifier's description needs its energy axis and phase names "
                             f"(classifier.json), missing {exc}") from None
        if not trained.is_compatible(info.axis):
            raise MicroscopeError(f"the microscope's energy axis ({info.axis.describe()}) is not the one the "
                                  f"classifier was trained on ({trained.describe()}): train or load a classifier "
                                  f"for this detector's calibration")
        if not names:
            raise InputError("the classifier's description names no phase")
    d = info.dwell_default_s if dwell_s is None or float(dwell_s) == 0 else float(dwell_s)
    if not (math.isfinite(d) and info.dwell_min_s <= d <= info.dwell_max_s):
        raise MicroscopeError(f"dwell time {d:g} s is outside the microscope's limits "
                              f"{info.dwell_min_s:g}-{info.dwell_max_s:g} s (0: its default, "
                              f"{info.dwell_default_s:g} s)")
    if truth is not None:
        shape = tuple(int(n) for n in truth.shape)
        if shape != tuple(info.shape):
            raise MicroscopeError(f"the ground truth's grid is {shape[0]} x {shape[1]}, the microscope's "
                                  f"{info.shape[0]} x {info.shape[1]}: give the specimen the microscope serves")
        if classifier is not None and int(truth.n_phases) != len(names):
            raise MicroscopeError(f"the ground truth has {int(truth.n_phases)} phases but the classifier knows "
                                  f"{len(names)}: train a classifier for this specimen's phases")
    return d
