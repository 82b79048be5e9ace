"""A microscope on the network: the spot-spectrum protocol and its HTTP client.

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

:class:`HttpMicroscope` speaks this protocol with httpx and looks like a specimen
(``shape``, ``n_phases``, ``axis``, ``measure(positions) -> spectra``), so the engine's
acquisition loop (:func:`napari_slads_eds.acquisition.acquire`, via
:func:`napari_slads_eds.jobs.run_slads`) runs on it unchanged, and every spectrum still
goes to the run's journal before it is used.  Network faults (refused connection, dropped
reply, timeout, HTTP 5xx) are retried with exponential back-off, with the same
``request_id``, until the microscope answers or ``outage_timeout`` passes; the run is
paused meanwhile (a message says so) and continues when the server is back.  A reply
that does not fit the request (wrong length, calibration, negative or NaN counts,
positions that were not asked for) raises :class:`MicroscopeReplyError`, one line naming
the field.

No Qt and no TensorFlow here; httpx is imported when a client is made.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ._validation import InputError, check_positions
from .spectra import EnergyAxis

__all__ = ["PROTOCOL", "PROTOCOL_VERSION", "API_PREFIX", "Microscope", "MicroscopeInfo", "HttpMicroscope",
           "MicroscopeError", "MicroscopeReplyError", "MicroscopeRefused", "MicroscopeUnavailable",
           "encode_counts", "decode_counts", "parse_info", "check_measure_reply", "check_url",
           "read_microscope_info", "check_microscope_for_classifier"]

PROTOCOL = "slads-eds-microscope"
PROTOCOL_VERSION = 1
API_PREFIX = "/v1"
#: Channels a spectrum may have (a sanity bound on what a server announces).
MAX_CHANNELS = 1 << 16

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------------------- client

def check_url(base, what: str = "--microscope") -> str:
    """The microscope's base URL without a trailing ``/``.

    Raises
    ------
    InputError
        Not an ``http://`` or ``https://`` URL with a host (the message starts with ``what``).
    """
    text = str(base).strip()
    if not text.startswith(("http://", "https://")) or not text.split("://", 1)[1].strip("/"):
        raise InputError(f"{what}: expected an http:// or https:// URL such as http://127.0.0.1:8765, "
                         f"got {text!r}")
    return text.rstrip("/")



def read_microscope_info(url: str, *, token: str | None = None, timeout: float = 5.0,
                         transport=None) -> MicroscopeInfo:
    """Read ``GET /v1/info`` once, without retries: the connection check before a run.

    Unlike :class:`HttpMicroscope`, which waits out an outage (a run in progress), this
    answers at once, so that a user interface can say what is wrong.  Needs httpx (the
    ``microscope`` extra); no Qt, no TensorFlow.

    Parameters
    ----------
    url : str
        Base URL of the server, e.g. ``http://127.0.0.1:8765``.
    token : str, optional
        Bearer token (None or empty: none sent).
    timeout : float
        Seconds to connect and to wait for the reply.
    transport : httpx.BaseTransport, optional
        For tests (``httpx.MockTransport``).

    Returns
    -------
    MicroscopeInfo
        Grid (rows, cols), energy axis (keV), dwell limits (s), largest batch.

    Raises
    ------
    InputError
        Not an http(s) URL, or httpx is not installed.
    MicroscopeUnavailable
        Nothing answers at ``url`` (refused, timed out, unknown host) or the server
        answers HTTP 5xx.
    MicroscopeRefused
        A missing or wrong token (HTTP 401/403), or another HTTP 4xx (e.g. 404: not a
        slads-eds microscope server at that URL).
    MicroscopeReplyError
        A reply that is not JSON or not a valid ``/v1/info`` (the field is named).
    """
    base = check_url(url, "microscope URL")
    try:
        import httpx
    except ImportError as exc:      # pragma: no cover - the extra is installed with the tests
        raise InputError("a microscope needs httpx: pip install 'napari-slads-eds[microscope]'") from exc
    headers = {"Accept": "application/json"}
    if token:
        token = str(token)
        if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
            raise InputError("microscope token: expected printable ASCII characters without spaces "
                             "(as in the server's --token-file)")
        headers["Authorization"] = f"Bearer {token}"
    try:
        with httpx.Client(base_url=base + API_PREFIX, headers=headers, transport=transport,
                          timeout=float(timeout)) as client:
            r = client.get("/info")
    except httpx.TimeoutException:
        raise MicroscopeUnavailable(f"the microscope at {base} did not answer within {float(timeout):g} s: is the "
                                    f"server running and the URL right?") from None
    except httpx.TransportError as exc:     # refused, unknown host, reset
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise MicroscopeUnavailable(f"no microscope answers at {base} ({reason}): is the server running "
                                    f"(e.g. slads-eds serve) and the URL right?") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:          # e.g. an invalid port
        raise InputError(f"microscope URL {base}: not a valid URL ({exc})") from None
    if r.status_code in (401, 403):
        if token:
            raise MicroscopeRefused(f"the microscope at {base} refused the token (HTTP {r.status_code}: "
                                    f"{_detail(r)}): check it")
        raise MicroscopeRefused(f"the microscope at {base} needs a token (HTTP {r.status_code}: {_detail(r)})")
    if r.status_code >= 500:
        raise MicroscopeUnavailable(f"the microscope at {base} cannot answer now (HTTP {r.status_code}: "
                                    f"{_detail(r)}); try again")
    if r.status_code >= 400:
        raise MicroscopeRefused(f"{base}{API_PREFIX}/info answered HTTP {r.status_code} ({_detail(r)}): is this a "
                                f"slads-eds microscope server?")
    try:
        body = r.json()
    except ValueError:
        raise MicroscopeReplyError(f"{base}{API_PREFIX}/info: the reply is not JSON ({r.text[:60]!r}); is this a "
                                   f"slads-eds microscope server?") from None
    return parse_info(body)


def check_microscope_for_classifier(info: MicroscopeInfo, classifier: dict | None = None, *,
                                    dwell_s: float | None = None, truth=None) -> float:
    """Check that a SLADS run with this classifier can sample this microscope, before any
    spot is measured.

    Parameters
    ----------
    info : MicroscopeInfo
        What the microscope's ``/v1/info`` says (:func:`read_microscope_info`).
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


class HttpMicroscope:
    """The acquisition loop's view of a microscope that speaks the protocol over HTTP.

    It has the specimen interface (``shape``, ``n_phases``, ``axis``, ``measure``), so
    ``run_slads`` runs on it unchanged; it pickles (without its connection) into the
    engine process.

    Parameters
    ----------
    url : str
        Base URL of the server, e.g. ``http://127.0.0.1:8765``.
    n_phases : int
        L, the phases of the run's classifier (the instrument does not know them).
    token : str, optional
        Bearer token.
    dwell_s : float, optional
        Dwell time per spot in seconds (default: the server's default); must be within
        the server's limits.
    timeout : float
        Seconds to connect, and to wait for a reply beyond the expected dwell
        (n positions x dwell x 2).
    outage_timeout : float
        Seconds the run waits for an unreachable microscope (retrying) before it gives up
        with :class:`MicroscopeUnavailable`; the journal keeps everything measured until then.
    backoff : (float, float)
        First and longest wait between retries, in seconds (doubled after every failure).
    phase_map, labels : ndarray (rows, cols), optional
        Ground truth, when it is known (a simulated specimen behind the server): the run
        then reports TD.  ``labels`` (0 at ill-spectra) scores the classifier on the run.
    transport : httpx.BaseTransport, optional
        For tests (``httpx.MockTransport``).
    sleep : callable(seconds), optional
        For tests.

    Raises
    ------
    MicroscopeUnavailable
        The server cannot be reached within ``outage_timeout``.
    MicroscopeRefused
        Wrong token (HTTP 401/403) or another refusal.
    MicroscopeReplyError
        A malformed ``/v1/info`` reply.
    InputError
        A bad URL, dwell time, or ground truth of another shape.
    """

    #: resume does not re-measure the journal's first spectra to check it (dose)
    deterministic = False

    def __init__(self, url: str, *, n_phases: int, token: str | None = None, dwell_s: float | None = None,
                 timeout: float = 10.0, outage_timeout: float = 600.0, backoff=(0.2, 5.0), phase_map=None,
                 labels=None, transport=None, sleep=None, info: MicroscopeInfo | None = None):
        self.url = check_url(url)
        self.n_phases = int(n_phases)
        if self.n_phases < 1:
            raise InputError(f"n_phases must be >= 1, got {n_phases}")
        self.token = token
        self.timeout = float(timeout)
        self.outage_timeout = float(outage_timeout)
        self.backoff = (float(backoff[0]), float(backoff[1]))
        if not (self.timeout > 0 and self.outage_timeout >= 0 and 0 < self.backoff[0] <= self.backoff[1]):
            raise InputError("timeout must be > 0 s, outage_timeout >= 0 s and 0 < first back-off <= longest")
        self._transport = transport
        self._sleep = sleep or time.sleep
        self._client = None
        self._ctx = None
        self.stats = {"requests": 0, "retries": 0, "outages": 0, "spectra": 0, "seconds_waiting": 0.0}
        self.info = info if info is not None else parse_info(self._request("GET", "/info"))
        self.shape = tuple(self.info.shape)
        self.axis = self.info.axis
        d = self.info.dwell_default_s if dwell_s is None else float(dwell_s)
        if not self.info.dwell_min_s <= d <= self.info.dwell_max_s:
            raise InputError(f"--dwell {d:g} s is outside the microscope's limits "
                             f"{self.info.dwell_min_s:g}..{self.info.dwell_max_s:g} s")
        self.dwell_s = d
        for name, a in (("phase_map", phase_map), ("labels", labels)):
            if a is not None:
                a = np.asarray(a)
                if a.shape != self.shape:
                    raise InputError(f"{name}: ground truth of shape {a.shape}, but the microscope's grid is "
                                     f"{self.shape}")
                setattr(self, name, a.astype(np.int16))

    # -- pickling into the engine process: no open connection, no context
    def __getstate__(self):
        s = dict(self.__dict__)
        s["_client"] = None
        s["_ctx"] = None
        s["_sleep"] = None if self._sleep is time.sleep else self._sleep
        return s

    def __setstate__(self, s):
        self.__dict__.update(s)
        if self._sleep is None:
            self._sleep = time.sleep

    def attach_context(self, ctx) -> None:
        """Report outages through ``ctx.log`` and give up waiting when ``ctx.stop_requested``
        (the engine's job context; :func:`napari_slads_eds.jobs.run_slads` calls this)."""
        self._ctx = ctx

    @property
    def client(self):
        if self._client is None:
            import httpx

            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._client = httpx.Client(base_url=self.url + API_PREFIX, headers=headers,
                                        transport=self._transport, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- messages
    def _say(self, text: str) -> None:
        log.warning(text)
        if self._ctx is not None:
            try:
                self._ctx.log(text)
            except Exception:   # a dead message queue must not break the measurement
                pass

    def _stop_requested(self) -> bool:
        return self._ctx is not None and bool(getattr(self._ctx, "stop_requested", False))

    # -- the one place that talks to the server
    def _request(self, method: str, path: str, *, json=None, read_timeout: float | None = None) -> dict:
        """One request with retries: network faults and HTTP 5xx are retried with
        exponential back-off until ``outage_timeout``; HTTP 4xx raise at once."""
        import httpx

        t_first_fail = None
        wait = self.backoff[0]
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            self.stats["requests"] += 1
            problem = None
            try:
                timeout = httpx.Timeout(self.timeout, read=read_timeout or self.timeout)
                r = self.client.request(method, path, json=json, timeout=timeout)
            except httpx.TransportError as exc:     # refused, reset, dropped, timed out
                problem = f"{type(exc).__name__}: {str(exc) or 'no reply'}"
            else:
                if r.status_code >= 500:
                    problem = f"HTTP {r.status_code}: {_detail(r)}"
                elif r.status_code in (401, 403):
                    raise MicroscopeRefused(f"the microscope at {self.url} refused the request (HTTP {r.status_code}: "
                                            f"{_detail(r)}); check the token (--token-file or SLADS_EDS_TOKEN)")
                elif r.status_code == 409:
                    from .engine import JobCancelled

                    raise JobCancelled(f"the microscope cancelled the measurement ({_detail(r)})")
                elif r.status_code >= 400:
                    raise MicroscopeRefused(f"the microscope at {self.url} refused {method} {API_PREFIX}{path} "
                                            f"(HTTP {r.status_code}: {_detail(r)})")
                else:
                    try:
                        body = r.json()
                    except ValueError:
                        raise MicroscopeReplyError(f"microscope reply to {method} {API_PREFIX}{path}: not JSON "
                                                   f"({r.text[:60]!r})") from None
                    if t_first_fail is not None:
                        down = max(time.monotonic() - t_first_fail, waited)
                        self.stats["seconds_waiting"] += down
                        self._say(f"microscope at {self.url} is back after {down:.1f} s; the run continues")
                    return body
            # a fault: wait and retry (same request, same request_id)
            now = time.monotonic()
            if t_first_fail is None:
                t_first_fail = now
                down = 0.0
                self.stats["outages"] += 1
                self._say(f"microscope at {self.url} not answering ({problem}); the run is paused and retries "
                          f"for up to {self.outage_timeout:g} s")
            else:
                down = max(now - t_first_fail, waited)
            if down + wait > self.outage_timeout:
                raise MicroscopeUnavailable(
                    f"the microscope at {self.url} did not answer for {down:.0f} s ({problem}); "
                    f"every measurement so far is in the journal: restart the server and resume the run")
            if self._stop_requested():
                from .engine import JobCancelled

                raise JobCancelled("stopped while waiting for the microscope")
            self.stats["retries"] += 1
            self._sleep(wait)
            waited += wait
            wait = min(wait * 2, self.backoff[1])

    # -- the specimen interface
    def measure(self, positions) -> np.ndarray:
        """Spectra at ``positions``, measured by the microscope.

        Parameters
        ----------
        positions : array_like, shape (n, 2), int (row, col)

        Returns
        -------
        ndarray, shape (n, p), float32
            Counts per channel, calibrated on :attr:`axis`.

        Raises
        ------
        InputError
            Positions outside the grid.
        MicroscopeReplyError, MicroscopeRefused, MicroscopeUnavailable
            See the class.
        """
        pos = check_positions(positions, self.shape).astype(np.int64)
        out = np.empty((len(pos), self.axis.size), dtype=np.float32)
        self.last_live_time_s = np.empty(len(pos), dtype=np.float64)
        b = self.info.max_batch
        for a in range(0, len(pos), b):
            chunk = pos[a:a + b]
            rid = uuid.uuid4().hex
            body = {"request_id": rid, "positions": chunk.tolist(), "dwell_s": self.dwell_s}
            reply = self._request("POST", "/measure", json=body,
                                  read_timeout=self.timeout + 2.0 * len(chunk) * self.dwell_s)
            out[a:a + len(chunk)], self.last_live_time_s[a:a + len(chunk)] = check_measure_reply(
                reply, rid, chunk, self.axis)
        self.stats["spectra"] += len(pos)
        return out

    def health(self) -> dict:
        """``GET /v1/health`` (no retries)."""
        r = self.client.get("/health")
        r.raise_for_status()
        return r.json()

    def cancel(self) -> None:
        """``POST /v1/cancel``: cancel the measurement under way (no retries)."""
        self.client.post("/cancel")


def _detail(r) -> str:
    try:
        d = r.json()
        if isinstance(d, dict) and "detail" in d:
            return str(d["detail"])[:200]
    except ValueError:
        pass
    return (r.text or r.reason_phrase or "")[:200].replace("\n", " ")
