"""The reference spot-spectrum server: a specimen behind the microscope protocol.

``slads-eds serve --specimen specimen.npz`` serves a simulated specimen (or, from Python,
any object with ``shape``, ``axis`` and ``measure(positions)``, e.g. a
:class:`~napari_slads_eds.replay.ReplaySpecimen`) over HTTP with FastAPI + uvicorn, so
the whole loop can be run against "a microscope" on localhost.  The protocol is
described in :mod:`napari_slads_eds.microscope_protocol` and ``docs/microscope.md``.

What the reference server does that a facility's server should do as well:

* **dwell delay**: every spot takes ``dwell_delay`` seconds (the beam's dwell), one
  measurement at a time (a second request waits for the first);
* **idempotent measurements**: a reply is stored under its ``request_id`` before it is
  sent, so a client that lost the reply and asks again gets the same spectra without the
  beam visiting the spots again; with ``state_dir`` the replies are also appended to
  ``state_dir/measured.jsonl`` (one JSON line per completed request: request id,
  positions, counts, live times), which survives a killed server: a restarted server
  reads it back, answers retried requests from it and the file is the record of every
  spot the beam measured;
* **cancel**: ``POST /v1/cancel`` ends the measurement under way (its request gets HTTP
  409, nothing of it is recorded or returned);
* **token authentication** (``Authorization: Bearer <token>``; ``/v1/health`` is open),
  bound to 127.0.0.1 by default.

No Qt and no TensorFlow here (the engine process is not involved).
"""

import asyncio
import contextlib
import json
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._validation import InputError
from .microscope_protocol import API_PREFIX, PROTOCOL, PROTOCOL_VERSION, encode_counts

__all__ = ["create_app", "ServerThread", "listen_socket", "read_token", "load_served_specimen", "openapi_schema", "serve",
           "read_measured_log", "MEASURED_LOG"]

#: File of ``state_dir`` that records every completed measurement request.
MEASURED_LOG = "measured.jsonl"
#: Replies kept in memory for retried requests.
_KEEP_REPLIES = 64


def _models():
    """The pydantic models of the protocol (built on first use: pydantic is imported late)."""
    from pydantic import BaseModel, Field

    class Grid(BaseModel):
        rows: int = Field(..., description="positions along the slow (row) axis", gt=0)
        cols: int = Field(..., description="positions along the fast (column) axis", gt=0)

    class EnergyAxisModel(BaseModel):
        offset_keV: float = Field(..., description="energy of the centre of channel 0, keV")
        scale_keV_per_channel: float = Field(..., description="channel width, keV per channel", gt=0)
        channels: int = Field(..., description="channels per spectrum (p)", gt=0)

    class DwellLimits(BaseModel):
        min: float = Field(..., description="shortest dwell time, s per spot", ge=0)
        max: float = Field(..., description="longest dwell time, s per spot", gt=0)
        default: float = Field(..., description="dwell time used when a client has no preference, s", gt=0)

    class Info(BaseModel):
        protocol: str = Field(PROTOCOL, description="always 'slads-eds-microscope'")
        version: int = Field(PROTOCOL_VERSION, description="protocol version (this is 1)")
        name: str = Field("", description="instrument or specimen name")
        grid: Grid
        pixel_size_nm: float | None = Field(None, description="distance between grid positions, nm")
        energy_axis: EnergyAxisModel
        beam_energy_keV: float | None = Field(None, description="accelerating voltage, keV")
        dwell_s: DwellLimits
        max_batch: int = Field(..., description="most positions one /v1/measure request may ask for", gt=0)

    class MeasureRequest(BaseModel):
        request_id: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                                description="client-chosen id; a request sent again with the same id is "
                                            "answered from the stored reply, without measuring again")
        positions: list[tuple[int, int]] = Field(..., min_length=1,
                                                 description="[row, col] grid positions, measured in this order")
        dwell_s: float = Field(..., description="dwell time per spot, s (within /v1/info dwell_s)")

    class MeasureReply(BaseModel):
        request_id: str
        positions: list[tuple[int, int]] = Field(..., description="the positions measured, as asked")
        dwell_s: float = Field(..., description="dwell time per spot, s")
        live_time_s: list[float] = Field(..., description="live time of each spectrum, s")
        energy_axis: EnergyAxisModel
        shape: tuple[int, int] = Field(..., description="(n, p): spectra x channels of counts")
        dtype: str = Field("<f4", description="always '<f4': little-endian float32")
        counts: str = Field(..., description="base64 of the (n, p) counts, row-major, little-endian float32")
        replayed: bool = Field(False, description="true when answered from a stored reply (a retried request)")

    class Health(BaseModel):
        status: str = Field("ok")
        busy: bool = Field(..., description="a measurement is under way")
        version: int = PROTOCOL_VERSION

    class Cancelled(BaseModel):
        cancelled: bool = Field(..., description="true when a measurement was under way and is cancelled")

    return dict(Info=Info, MeasureRequest=MeasureRequest, MeasureReply=MeasureReply, Health=Health,
                Cancelled=Cancelled, EnergyAxisModel=EnergyAxisModel)


def read_measured_log(state_dir) -> list[dict]:
    """The completed requests recorded in ``state_dir/measured.jsonl`` (a line cut off by a
    killed server is ignored: it was never answered)."""
    p = Path(state_dir) / MEASURED_LOG
    out = []
    if not p.is_file():
        return out
    with open(p, "rb") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


class _State:
    """The microscope's state: one measurement at a time, stored replies, cancel flag."""

    def __init__(self, specimen, dwell_delay: float, state_dir):
        self.specimen = specimen
        self.dwell_delay = float(dwell_delay)
        self.lock = asyncio.Lock()        # (the handlers run on uvicorn's event loop)
        self.cancel = asyncio.Event()
        self.busy = False
        self.replies: OrderedDict[str, dict] = OrderedDict()
        self.n_measured = 0
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self._log = None
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            for rec in read_measured_log(self.state_dir):
                self._keep(rec)
                self.n_measured += len(rec["positions"])
            self._truncate_partial_line()
            self._log = open(self.state_dir / MEASURED_LOG, "ab")

    def _truncate_partial_line(self):
        p = self.state_dir / MEASURED_LOG
        if p.is_file():
            data = p.read_bytes()
            cut = data.rfind(b"\n") + 1
            if cut != len(data):
                with open(p, "r+b") as f:
                    f.truncate(cut)

    def _keep(self, rec):
        self.replies[rec["request_id"]] = rec
        self.replies.move_to_end(rec["request_id"])
        while len(self.replies) > _KEEP_REPLIES:
            self.replies.popitem(last=False)

    def record(self, rec: dict) -> None:
        """Store a completed reply (on disk first, when there is a state folder)."""
        if self._log is not None:
            self._log.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
            self._log.flush()       # in the OS's hands: survives a killed server process
        self._keep(rec)
        self.n_measured += len(rec["positions"])

    def close(self):
        if self._log is not None:
            self._log.close()
            self._log = None


def create_app(specimen, *, token: str | None = None, dwell_delay: float = 0.0, pixel_size_nm: float | None = None,
               beam_energy_keV: float | None = 15.0, dwell_limits=(0.0, 60.0), dwell_default: float = 0.02,
               max_batch: int = 4096, state_dir=None, name: str = ""):
    """The FastAPI application of the reference server.

    Parameters
    ----------
    specimen : object
        With ``shape`` (rows, cols), ``axis`` (EnergyAxis) and ``measure(positions (n, 2))
        -> spectra (n, p)`` (a :class:`~napari_slads_eds.specimen.SimulatedSpecimen` or a
        :class:`~napari_slads_eds.replay.ReplaySpecimen`).
    token : str, optional
        Required bearer token of every endpoint but ``/v1/health``.
    dwell_delay : float
        Seconds every spot takes (the emulated beam dwell), >= 0.
    pixel_size_nm, beam_energy_keV : float, optional
        Announced by ``/v1/info``.
    dwell_limits : (float, float)
        Dwell times (s per spot) a request may ask for.
    dwell_default : float
        The default dwell time announced.
    max_batch : int
        Most positions per request.
    state_dir : path, optional
        Folder of ``measured.jsonl`` (see the module docstring); without it, stored
        replies live in memory only.
    name : str

    Raises
    ------
    InputError
        A specimen without the interface, negative delays, inconsistent limits.
    """
    from fastapi import Depends, FastAPI, HTTPException, Response
    from fastapi.concurrency import run_in_threadpool
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    for attr in ("shape", "axis", "measure"):
        if not hasattr(specimen, attr):
            raise InputError(f"the served specimen has no {attr!r} (expected shape, axis and measure(positions))")
    if not (dwell_delay >= 0 and 0 <= dwell_limits[0] <= dwell_default <= dwell_limits[1] and max_batch >= 1):
        raise InputError("serve: need dwell delay >= 0 s, dwell limits min <= default <= max and max batch >= 1")
    M = _models()
    MeasureRequest = M["MeasureRequest"]
    H, W = (int(v) for v in specimen.shape)
    ax = specimen.axis
    axis_json = {"offset_keV": float(ax.offset_keV), "scale_keV_per_channel": float(ax.scale_keV),
                 "channels": int(ax.size)}
    st = _State(specimen, dwell_delay, state_dir)

    def _reply(rec: dict, replayed: bool):
        # already in the reply's form: sent as it is, without FastAPI's response validation and
        # encoding (a few ms per request of 2048 channels; the model still documents it)
        return Response(json.dumps({**rec, "replayed": replayed}, separators=(",", ":")).encode(),
                        media_type="application/json")
    bearer = HTTPBearer(auto_error=False)

    async def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)):
        if token is None:
            return
        if cred is None or not secrets.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        st.close()

    app = FastAPI(
        lifespan=lifespan,
        title="slads-eds spot-spectrum microscope", version=f"{PROTOCOL_VERSION}.0",
        description=("The seam between the SLADS-EDS acquisition loop and an SEM's EDS system: the grid and "
                     "calibration (GET /v1/info), spectra at a batch of positions (POST /v1/measure), health "
                     "and cancel.  Units: positions are grid indices [row, col]; energies keV; times s; counts "
                     "are detector counts per channel."))
    app.state.microscope = st

    @app.get(f"{API_PREFIX}/info", response_model=M["Info"], dependencies=[Depends(auth)],
             summary="grid, pixel size, energy axis, beam energy, dwell limits")
    async def info():
        return {"protocol": PROTOCOL, "version": PROTOCOL_VERSION, "name": name,
                "grid": {"rows": H, "cols": W}, "pixel_size_nm": pixel_size_nm, "energy_axis": axis_json,
                "beam_energy_keV": beam_energy_keV,
                "dwell_s": {"min": float(dwell_limits[0]), "max": float(dwell_limits[1]),
                            "default": float(dwell_default)}, "max_batch": int(max_batch)}

    @app.get(f"{API_PREFIX}/health", response_model=M["Health"], summary="liveness (no authentication)")
    async def health():
        return {"status": "ok", "busy": st.busy, "version": PROTOCOL_VERSION}

    @app.post(f"{API_PREFIX}/cancel", response_model=M["Cancelled"], dependencies=[Depends(auth)],
              summary="cancel the measurement under way (its request gets HTTP 409)")
    async def cancel():
        was = st.busy
        if was:
            st.cancel.set()
        return {"cancelled": was}

    @app.post(f"{API_PREFIX}/measure", response_model=M["MeasureReply"], dependencies=[Depends(auth)],
              summary="spectra at a batch of positions",
              responses={409: {"description": "cancelled by POST /v1/cancel; nothing was recorded"},
                         422: {"description": "positions outside the grid, dwell outside the limits, too many "
                                              "positions, or a malformed request"}})
    async def measure(req: MeasureRequest):
        # async handlers on the event loop, not FastAPI's thread pool: two thread hand-overs
        # less per request, which under CPU contention cost several ms each
        old = st.replies.get(req.request_id)
        if old is not None:
            return _reply(old, True)
        n = len(req.positions)
        if n > max_batch:
            raise HTTPException(422, f"{n} positions, at most {max_batch} per request")
        if not (dwell_limits[0] <= req.dwell_s <= dwell_limits[1]):
            raise HTTPException(422, f"dwell_s {req.dwell_s} s outside {dwell_limits[0]}..{dwell_limits[1]} s")
        pos = np.asarray(req.positions, dtype=np.int64).reshape(-1, 2)
        if pos.min() < 0 or (pos[:, 0] >= H).any() or (pos[:, 1] >= W).any():
            raise HTTPException(422, f"positions outside the {H}x{W} grid")
        async with st.lock:               # one beam: one measurement at a time
            old = st.replies.get(req.request_id)   # the same request sent twice at once
            if old is not None:
                return _reply(old, True)
            st.busy = True
            st.cancel.clear()
            try:
                t_end = time.monotonic() + n * st.dwell_delay
                if n <= 64:
                    spectra = st.specimen.measure(pos)
                else:                         # large batches: keep /health and /cancel answering
                    spectra = await run_in_threadpool(st.specimen.measure, pos)
                spectra = np.asarray(spectra, dtype=np.float32)
                # the dwell, interruptible by /v1/cancel
                left = t_end - time.monotonic()
                if left > 0:
                    try:
                        await asyncio.wait_for(st.cancel.wait(), left)
                    except (asyncio.TimeoutError, TimeoutError):
                        pass
                if st.cancel.is_set():
                    raise HTTPException(409, "measurement cancelled")
                rec = {"request_id": req.request_id, "positions": pos.tolist(), "dwell_s": float(req.dwell_s),
                       "live_time_s": [float(req.dwell_s)] * n, "energy_axis": axis_json,
                       "shape": [n, int(spectra.shape[1])], "dtype": "<f4", "counts": encode_counts(spectra)}
                st.record(rec)
            finally:
                st.busy = False
        return _reply(rec, False)

    return app


def openapi_schema(app=None) -> dict:
    """The OpenAPI schema of the protocol (as committed in ``docs/microscope_openapi.json``)."""
    if app is None:
        from .spectra import EnergyAxis

        class _Dummy:
            shape = (1, 1)
            axis = EnergyAxis(0.0, 0.01, 2048)

            def measure(self, positions):
                return np.zeros((len(positions), 2048), np.float32)

        app = create_app(_Dummy())
    return app.openapi()


def load_served_specimen(path):
    """The specimen ``slads-eds serve --specimen PATH`` serves: a ``specimen.npz`` written by
    :func:`~napari_slads_eds.specimen.save_specimen`, or a run folder holding one.

    Raises
    ------
    InputError
        Not a specimen file or a run folder with one.
    """
    from .run_folder import SPECIMEN_FILE
    from .specimen import load_specimen

    p = Path(path)
    if p.is_dir():
        if not (p / SPECIMEN_FILE).is_file():
            raise InputError(f"--specimen {p}: a folder, but without {SPECIMEN_FILE} (a run folder of "
                             f"slads-eds run/demo has one)")
        p = p / SPECIMEN_FILE
    return load_specimen(p)


def listen_socket(host: str, port: int):
    """A TCP socket bound to ``host:port`` (port 0: a free one) for uvicorn, with
    SO_REUSEADDR (a killed server restarts on its port at once) and TCP_NODELAY, which
    accepted connections inherit: uvicorn writes a reply's headers and body separately,
    and with Nagle's algorithm the body then waits for the client's delayed ACK, 40 ms on
    Linux, per request (measured: 44 ms per request without, 1 ms with).

    Raises
    ------
    InputError
        The address cannot be bound (in use, not an address of this machine).
    """
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


class ServerThread:
    """Run an app with uvicorn in a thread of this process, on a socket bound here (port 0:
    a free port), e.g. for tests.  ``url`` is the base URL; :meth:`stop` ends it.

    Raises
    ------
    RuntimeError
        The server did not start within ``timeout`` seconds.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0):
        import uvicorn

        self.sock = listen_socket(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > timeout or not self.thread.is_alive():
                raise RuntimeError(f"the microscope server did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def read_token(token_file=None) -> str | None:
    """The bearer token: from ``token_file`` (first line), else ``$SLADS_EDS_TOKEN``, else None.

    Raises
    ------
    InputError
        An unreadable or empty token file.
    """
    if token_file:
        try:
            t = Path(token_file).read_text().strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--token-file {token_file}: not readable ({exc})") from exc
        if not t or not t[0].strip():
            raise InputError(f"--token-file {token_file}: the file is empty")
        return t[0].strip()
    return os.environ.get("SLADS_EDS_TOKEN") or None


def serve(specimen_path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
          dwell_delay: float = 0.0, state_dir=None, pixel_size_nm=None, beam_energy_keV=15.0,
          max_batch: int = 4096, quiet: bool = False) -> None:
    """``slads-eds serve``: load the specimen and serve it until interrupted."""
    import sys

    import uvicorn

    spec = load_served_specimen(specimen_path)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        print("slads-eds: warning: serving beyond localhost without a token; anyone who can reach "
              f"{host}:{port} can drive the beam", file=sys.stderr)
    app = create_app(spec, token=token, dwell_delay=dwell_delay, state_dir=state_dir, pixel_size_nm=pixel_size_nm,
                     beam_energy_keV=beam_energy_keV, max_batch=max_batch, name=Path(str(specimen_path)).name)
    H, W = spec.shape
    print(f"slads-eds: serving {specimen_path} ({H}x{W} grid, {spec.axis.describe()}, dwell delay "
          f"{dwell_delay:g} s per spot{', token required' if token else ''}) on http://{host}:{port}{API_PREFIX}",
          file=sys.stderr, flush=True)
    sock = listen_socket(host, port)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning" if quiet else "info")).run(sockets=[sock])
    finally:
        sock.close()
