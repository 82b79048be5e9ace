"""A microscope on the network: the HTTP client of the spot-spectrum protocol.

The protocol itself (``GET /v1/info``, ``POST /v1/measure``, ``GET /v1/health``,
``POST /v1/cancel``; version 1, every path under ``/v1``), its data and checks are in
:mod:`napari_slads_eds.microscope_protocol`; this module re-exports its public names, so
``from napari_slads_eds.microscope import ...`` gives the protocol and the client alike.

:class:`HttpMicroscope` speaks this protocol with httpx and looks like a specimen
(``shape``, ``n_phases``, ``axis``, ``measure(positions) -> spectra``), so the engine's
acquisition loop (:func:`napari_slads_eds.acquisition.acquire`, via
:func:`napari_slads_eds.slads_job.run_slads`) runs on it unchanged, and every spectrum still
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

import logging
import time
import uuid

import numpy as np

from ._validation import InputError, check_positions
from .microscope_protocol import (API_PREFIX, PROTOCOL, PROTOCOL_VERSION, Microscope, MicroscopeError,
                                  MicroscopeInfo, MicroscopeRefused, MicroscopeReplyError, MicroscopeUnavailable,
                                  check_measure_reply, check_microscope_for_classifier, decode_counts, encode_counts,
                                  parse_info)

__all__ = ["PROTOCOL", "PROTOCOL_VERSION", "API_PREFIX", "Microscope", "MicroscopeInfo", "HttpMicroscope",
           "MicroscopeError", "MicroscopeReplyError", "MicroscopeRefused", "MicroscopeUnavailable",
           "encode_counts", "decode_counts", "parse_info", "check_measure_reply", "check_url",
           "read_microscope_info", "check_microscope_for_classifier"]

log = logging.getLogger(__name__)


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
        (the engine's job context; :func:`napari_slads_eds.slads_job.run_slads` calls this)."""
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
