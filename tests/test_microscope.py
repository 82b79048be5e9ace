"""The microscope seam: protocol, HTTP client, reference server, faults.

Every server here runs on a free localhost port opened inside the test and is stopped at
its end (in a thread of this process, or as a subprocess where the test kills it).
No TensorFlow: a two-phase specimen whose phases sit in different halves of the
spectrum is classified by comparing the halves.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from napari_slads_eds.config import SamplingConfig
import pytest

from napari_slads_eds import Sampler
from napari_slads_eds.acquisition import RunConfig, acquire
from napari_slads_eds.journal import Journal, read_journal
from napari_slads_eds.engine import JobCancelled
from napari_slads_eds.erd_database import build_training_database
from napari_slads_eds.erd_models import LinearERD
from napari_slads_eds.microscope import (HttpMicroscope, Microscope, MicroscopeReplyError, MicroscopeRefused,
                                         MicroscopeUnavailable, encode_counts)
from napari_slads_eds.server import (MEASURED_LOG, ServerThread, create_app, listen_socket, openapi_schema,
                                     read_measured_log)
from napari_slads_eds.specimen import SimulatedSpecimen, save_specimen
from napari_slads_eds.spectra import EnergyAxis, ReferenceSpectra

REPO = Path(__file__).resolve().parents[1]
P = 32                      # channels
AXIS = EnergyAxis(-0.05, 0.01, P)
TOKEN = "t0ken-for-tests"


def _specimen(truth, seed=4):
    refs = np.full((2, 3, P), 1.0)
    refs[0, :, : P // 2] += 40.0
    refs[1, :, P // 2:] += 40.0
    return SimulatedSpecimen(truth, ReferenceSpectra(refs, AXIS, ("low", "high")), ill_fraction=0.0, seed=seed)


def classify(spectra):
    s = np.asarray(spectra)
    return np.where(s[:, : P // 2].sum(1) >= s[:, P // 2:].sum(1), 1, 2).astype(np.int16)


class Ctx:
    """A JobContext stand-in that keeps the log lines."""

    def __init__(self):
        self.logs, self.frames, self.stop = [], [], False

    def emit(self, type_, **m):
        if type_ == "frame":
            self.frames.append(m)

    def log(self, text):
        self.logs.append(text)

    @property
    def stop_requested(self):
        return self.stop

    def checkpoint(self, graceful=False):
        return self.stop


@pytest.fixture(scope="module")
def truth(blobs_module):
    return blobs_module


@pytest.fixture(scope="module")
def blobs_module():
    from skimage.data import binary_blobs

    return binary_blobs(40, blob_size_fraction=0.25, volume_fraction=0.4, rng=7).astype(np.int16) + 1


@pytest.fixture(scope="module")
def specimen(truth):
    return _specimen(truth)


@pytest.fixture(scope="module")
def erd():
    from skimage.data import binary_blobs

    imgs = [binary_blobs(40, blob_size_fraction=0.25, rng=s).astype(np.int16) + 1 for s in (31, 32)]
    db = build_training_database(imgs, 2, c_values=(8.0,), seed=0)
    return LinearERD.fit(db.features, db.rd[:, 0], 8.0)


@pytest.fixture
def server(specimen):
    with ServerThread(create_app(specimen, token=TOKEN, pixel_size_nm=12.5)) as srv:
        yield srv


def test_client_measures_what_the_specimen_gives(server, specimen):
    with HttpMicroscope(server.url, n_phases=2, token=TOKEN, dwell_s=0.5) as mic:
        assert isinstance(mic, Microscope)
        assert mic.shape == specimen.shape and mic.axis == specimen.axis and mic.n_phases == 2
        assert mic.info.pixel_size_nm == 12.5 and mic.info.beam_energy_keV == 15.0
        pos = np.array([[0, 0], [39, 39], [7, 21], [7, 21]])
        got = mic.measure(pos)
        assert got.dtype == np.float32 and got.shape == (4, P)
        assert np.array_equal(got, specimen.measure(pos))          # lossless encoding
        assert np.array_equal(mic.last_live_time_s, [0.5] * 4)
        assert mic.health()["status"] == "ok"


def test_wrong_or_missing_token_is_refused(server):
    for tok in ("wrong", None):
        with pytest.raises(MicroscopeRefused, match="HTTP 401") as e:
            HttpMicroscope(server.url, n_phases=2, token=tok)
        assert "\n" not in str(e.value)
    # the request itself is refused too, not only the info
    r = httpx.post(server.url + "/v1/measure", json={"request_id": "a", "positions": [[0, 0]], "dwell_s": 0.1},
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(server.url + "/v1/health").status_code == 200      # health is open


def test_bad_dwell_and_url_are_refused(server):
    with pytest.raises(Exception, match="outside the microscope's limits"):
        HttpMicroscope(server.url, n_phases=2, token=TOKEN, dwell_s=100.0)
    with pytest.raises(Exception, match="http:// or https:// URL"):
        HttpMicroscope("127.0.0.1:1", n_phases=2)


def test_server_refuses_bad_requests(server):
    h = {"Authorization": f"Bearer {TOKEN}"}
    for body in ({"request_id": "a", "positions": [[40, 0]], "dwell_s": 0.1},      # outside the grid
                 {"request_id": "b", "positions": [[0, 0]], "dwell_s": 61.0},      # dwell beyond the limit
                 {"request_id": "c d", "positions": [[0, 0]], "dwell_s": 0.1},     # bad id
                 {"request_id": "e", "positions": [], "dwell_s": 0.1}):
        r = httpx.post(server.url + "/v1/measure", json=body, headers=h)
        assert r.status_code == 422, body


# ------------------------------------------------------------------ malformed replies

def _mock_microscope(specimen, mutate_reply=None, mutate_info=None):
    """A client whose transport answers like a server, with a reply changed by ``mutate_*``."""
    info = {"protocol": "slads-eds-microscope", "version": 1, "name": "mock",
            "grid": {"rows": 40, "cols": 40}, "pixel_size_nm": None,
            "energy_axis": {"offset_keV": AXIS.offset_keV, "scale_keV_per_channel": AXIS.scale_keV, "channels": P},
            "beam_energy_keV": 15.0, "dwell_s": {"min": 0.0, "max": 10.0, "default": 0.1}, "max_batch": 100}

    def handler(request):
        if request.url.path.endswith("/info"):
            d = json.loads(json.dumps(info))
            if mutate_info:
                mutate_info(d)
            return httpx.Response(200, json=d)
        req = json.loads(request.content)
        pos = np.asarray(req["positions"])
        d = {"request_id": req["request_id"], "positions": pos.tolist(), "dwell_s": req["dwell_s"],
             "live_time_s": [req["dwell_s"]] * len(pos), "energy_axis": dict(info["energy_axis"]),
             "shape": [len(pos), P], "dtype": "<f4", "counts": encode_counts(specimen.measure(pos))}
        if mutate_reply:
            d = mutate_reply(d)
            if isinstance(d, httpx.Response):
                return d
        return httpx.Response(200, json=d)

    return HttpMicroscope("http://mock", n_phases=2, transport=httpx.MockTransport(handler), sleep=lambda s: None)


def _counts(d, f):
    a = np.frombuffer(base64.b64decode(d["counts"]), "<f4").copy()
    d["counts"] = base64.b64encode(f(a).astype("<f4").tobytes()).decode()
    return d


def _set(key, value):
    def f(d):
        d[key] = value
        return d
    return f


MALFORMED = {
    "wrong length": (lambda d: _counts(d, lambda a: a[:-1]), "counts", "expected 2 spectra x 32 channels"),
    "negative counts": (lambda d: _counts(d, lambda a: np.where(np.arange(a.size) == 40, -1.0, a)), "counts",
                        "negative counts"),
    "NaN counts": (lambda d: _counts(d, lambda a: np.where(np.arange(a.size) == 3, np.nan, a)), "counts", "NaN"),
    "not base64": (_set("counts", "%%%"), "counts", "not valid base64"),
    "other calibration": (lambda d: {**d, "energy_axis": {**d["energy_axis"], "scale_keV_per_channel": 0.02}},
                          "energy_axis", "announced"),
    "other positions": (lambda d: {**d, "positions": [[0, 1], [5, 5]]}, "positions", "was asked for"),
    "fewer positions": (lambda d: {**d, "positions": d["positions"][:1]}, "positions", "asked for"),
    "fractional positions": (lambda d: {**d, "positions": [[0.5, 1], [2, 3]]}, "positions", "asked for"),
    "another request": (_set("request_id", "someone-else"), "request_id", "another request"),
    "missing counts": (lambda d: {k: v for k, v in d.items() if k != "counts"}, "counts", "missing"),
    "bad live time": (_set("live_time_s", [0.1, -1.0]), "live_time_s", "negative"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_replies_give_one_line_naming_the_field(specimen, kind):
    mutate, field, text = MALFORMED[kind]
    mic = _mock_microscope(specimen, mutate)
    with pytest.raises(MicroscopeReplyError) as e:
        mic.measure([[0, 1], [2, 3]])
    msg = str(e.value)
    assert "\n" not in msg and f"'{field}'" in msg and text in msg, msg


def test_not_json_and_malformed_info_are_named(specimen):
    mic = _mock_microscope(specimen, lambda d: httpx.Response(200, text="<html>proxy error</html>"))
    with pytest.raises(MicroscopeReplyError, match="not JSON"):
        mic.measure([[0, 0]])
    for mutate, field in ((_set("version", 2), "version"), (_set("protocol", "other"), "protocol"),
                          (lambda d: d["energy_axis"].pop("channels"), "energy_axis.channels"),
                          (lambda d: d["grid"].update(rows=-3), "grid.rows"),
                          (lambda d: d["dwell_s"].update(default=50.0), "dwell_s")):
        with pytest.raises(MicroscopeReplyError) as e:
            _mock_microscope(specimen, mutate_info=mutate)
        assert f"'{field}'" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------- retries and back-off

def test_faults_are_retried_with_backoff_and_the_same_request_id(specimen):
    calls, waits = [], []
    good = _mock_microscope(specimen)._transport

    def handler(request):
        if request.url.path.endswith("/measure"):
            calls.append(json.loads(request.content)["request_id"])
            if len(calls) <= 2:
                raise httpx.ConnectError("connection refused")
            if len(calls) == 3:
                return httpx.Response(503, json={"detail": "busy"})
        return good.handle_request(request)

    ctx = Ctx()
    mic = HttpMicroscope("http://mock", n_phases=2, transport=httpx.MockTransport(handler), sleep=waits.append,
                         backoff=(0.1, 0.25))
    mic.attach_context(ctx)
    pos = np.array([[3, 4], [5, 6]])
    assert np.array_equal(mic.measure(pos), specimen.measure(pos))
    assert waits == [0.1, 0.2, 0.25]                     # doubled, capped
    assert len(set(calls)) == 1 and len(calls) == 4      # one request, sent again
    assert mic.stats["outages"] == 1 and mic.stats["retries"] == 3
    assert "paused" in ctx.logs[0] and "is back" in ctx.logs[-1]


def test_an_outage_longer_than_the_timeout_is_a_clear_error():
    waits = []

    def down(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(MicroscopeUnavailable) as e:
        HttpMicroscope("http://mock", n_phases=2, transport=httpx.MockTransport(down), sleep=waits.append,
                       outage_timeout=3.0, backoff=(0.5, 1.0))
    assert "did not answer" in str(e.value) and "\n" not in str(e.value)
    assert sum(waits) <= 3.0 and len(waits) >= 3


def test_a_stop_request_ends_the_wait(specimen):
    def down(request):
        raise httpx.ConnectError("refused")

    mic = _mock_microscope(specimen)
    mic._transport, mic._client = httpx.MockTransport(down), None
    ctx = Ctx()
    ctx.stop = True
    mic.attach_context(ctx)
    with pytest.raises(JobCancelled):
        mic.measure([[0, 0]])


# ------------------------------------------------------------ the reference server

def test_a_retried_request_is_answered_without_measuring_again(specimen, tmp_path):
    h = {"Authorization": f"Bearer {TOKEN}"}
    body = {"request_id": "req-1", "positions": [[1, 2], [3, 4]], "dwell_s": 0.1}
    with ServerThread(create_app(specimen, token=TOKEN, state_dir=tmp_path)) as srv:
        a = httpx.post(srv.url + "/v1/measure", json=body, headers=h).json()
        b = httpx.post(srv.url + "/v1/measure", json=body, headers=h).json()
    assert not a["replayed"] and b["replayed"] and a["counts"] == b["counts"]
    assert len(read_measured_log(tmp_path)) == 1
    # a restarted server (new process state, same state folder) still knows the reply
    with ServerThread(create_app(specimen, token=TOKEN, state_dir=tmp_path)) as srv:
        c = httpx.post(srv.url + "/v1/measure", json=body, headers=h).json()
        assert srv.server.config.app.state.microscope.n_measured == 2
    assert c["replayed"] and c["counts"] == a["counts"]
    assert len(read_measured_log(tmp_path)) == 1


def test_a_line_cut_off_by_a_killed_server_is_dropped(specimen, tmp_path):
    with ServerThread(create_app(specimen, state_dir=tmp_path)) as srv:
        HttpMicroscope(srv.url, n_phases=2).measure([[0, 0]])
    with open(tmp_path / MEASURED_LOG, "ab") as f:
        f.write(b'{"request_id": "half')
    with ServerThread(create_app(specimen, state_dir=tmp_path)) as srv:
        HttpMicroscope(srv.url, n_phases=2).measure([[1, 1]])
    recs = read_measured_log(tmp_path)
    assert [r["positions"] for r in recs] == [[[0, 0]], [[1, 1]]]


def test_cancel_ends_the_measurement_under_way(specimen):
    with ServerThread(create_app(specimen, dwell_delay=0.5)) as srv:
        mic = HttpMicroscope(srv.url, n_phases=2)
        out = {}

        def run():
            try:
                mic.measure([[0, 0], [1, 1], [2, 2], [3, 3]])
            except JobCancelled as exc:
                out["exc"] = exc

        t = threading.Thread(target=run)
        t0 = time.perf_counter()
        t.start()
        while not httpx.get(srv.url + "/v1/health").json()["busy"]:
            time.sleep(0.01)
        assert httpx.post(srv.url + "/v1/cancel").json() == {"cancelled": True}
        t.join(5)
        assert "exc" in out and time.perf_counter() - t0 < 1.5       # not the 2 s dwell
        assert srv.server.config.app.state.microscope.n_measured == 0


def test_dwell_delay_is_per_spot(specimen):
    with ServerThread(create_app(specimen, dwell_delay=0.05)) as srv:
        mic = HttpMicroscope(srv.url, n_phases=2)
        t0 = time.perf_counter()
        mic.measure(np.array([[i, i] for i in range(6)]))
        assert time.perf_counter() - t0 >= 0.3


def test_the_committed_openapi_schema_is_the_servers():
    committed = json.loads((REPO / "docs" / "microscope_openapi.json").read_text())
    assert committed == json.loads(json.dumps(openapi_schema()))
    assert {"/v1/info", "/v1/measure", "/v1/health", "/v1/cancel"} <= set(committed["paths"])


# ------------------------------------------------- the connection check before a run

def test_the_connection_check_answers_at_once_and_names_what_is_wrong(server, specimen, tmp_path):
    """read_microscope_info (no retries) and check_microscope_for_classifier: what the Run
    tab's Connect uses; each refusal is one line."""
    from napari_slads_eds._validation import InputError
    from napari_slads_eds.microscope import MicroscopeError, check_microscope_for_classifier, read_microscope_info

    info = read_microscope_info(server.url, token=TOKEN)
    assert info.shape == specimen.shape and info.axis == specimen.axis and info.dwell_default_s == 0.02
    assert info.describe(0.5).startswith("40 x 40 grid of 12.5 nm, energy axis 32 channels") and "dwell 0.5 s" in \
        info.describe(0.5)
    clf = {"axis": specimen.axis.to_dict(), "phase_names": ["low", "high"]}
    assert check_microscope_for_classifier(info, clf) == 0.02                  # the default dwell
    assert check_microscope_for_classifier(info, clf, dwell_s=0.0, truth=specimen) == 0.02
    assert check_microscope_for_classifier(info, None, dwell_s=1.5) == 1.5
    (tmp_path / "classifier.json").write_text(json.dumps(clf))      # a classifier folder: its description
    assert check_microscope_for_classifier(info, tmp_path, dwell_s=0.1) == 0.1
    sock = listen_socket("127.0.0.1", 0)
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    t0 = time.perf_counter()
    cases = [(lambda: read_microscope_info(closed), MicroscopeUnavailable, f"no microscope answers at {closed}"),
             (lambda: read_microscope_info(server.url), MicroscopeRefused, "needs a token"),
             (lambda: read_microscope_info(server.url, token="nope"), MicroscopeRefused, "refused the token"),
             (lambda: read_microscope_info(server.url + "/x", token=TOKEN), MicroscopeRefused, "HTTP 404"),
             (lambda: read_microscope_info("127.0.0.1:8765"), InputError, "expected an http:// or https:// URL"),
             (lambda: check_microscope_for_classifier(info, dict(clf, axis={"offset_keV": 0.0, "scale_keV": 0.01,
                                                                           "size": 2048})),
              MicroscopeError, "is not the one the classifier was trained on (2048 channels"),
             (lambda: check_microscope_for_classifier(info, clf, dwell_s=61), MicroscopeError, "outside"),
             (lambda: check_microscope_for_classifier(info, tmp_path / "none"), InputError, "classifier.json"),
             (lambda: check_microscope_for_classifier(info, clf, truth=_specimen(np.ones((8, 8), np.int16))),
              MicroscopeError, "grid is 8 x 8, the microscope's 40 x 40"),
             (lambda: check_microscope_for_classifier(info, dict(clf, phase_names=["a", "b", "c"]), truth=specimen),
              MicroscopeError, "the ground truth has 2 phases but the classifier knows 3")]
    for fn, exc, text in cases:
        with pytest.raises(exc) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert time.perf_counter() - t0 < 5          # no back-off: a closed port is said at once


# ------------------------------------------------------- the loop against the server

@pytest.mark.parametrize("overlap", [False, True])
def test_a_run_against_the_server_equals_the_in_process_run(server, specimen, truth, erd, overlap, tmp_path):
    cfg = RunConfig(SamplingConfig(fraction=0.2, batch=2, batch_mode="pseudo", overlap=overlap, seed=1), send_maps=False)
    ref_s = Sampler(truth.shape, 2, erd, truth=truth)
    ref = acquire(Ctx(), ref_s, specimen.measure, classify, cfg)
    mic = HttpMicroscope(server.url, n_phases=2, token=TOKEN, phase_map=truth)
    s = Sampler(mic.shape, 2, erd, truth=mic.phase_map)
    j = Journal(tmp_path / "journal.h5", P, {})
    got = acquire(Ctx(), s, mic.measure, classify, cfg, journal=j)
    j.close()
    assert np.array_equal(got["positions"], ref["positions"])
    assert np.array_equal(s.mask, ref_s.mask) and s.td == ref_s.td
    jj = read_journal(tmp_path / "journal.h5")
    assert np.array_equal(jj["spectrum"], specimen.measure(jj["position"]))


def test_resume_on_a_microscope_checks_the_journal_without_measuring(server, specimen, truth, erd, tmp_path):
    # run_slads (which loads the Keras classifier, so it is run in the engine by the benchmark and
    # the CLI) checks a journal before resuming; on a specimen it measures the first spectra again,
    # on a microscope it must not (dose)
    from napari_slads_eds.slads_job import _check_journal_is_this_run

    cfg = RunConfig(SamplingConfig(fraction=0.1, seed=0))
    mic = HttpMicroscope(server.url, n_phases=2, token=TOKEN)
    j = Journal(tmp_path / "journal.h5", P, {"grid": [40, 40], "phases": 2, "k": 10, "run": cfg.to_dict()})
    acquire(Ctx(), Sampler(mic.shape, 2, erd), mic.measure, classify, cfg, journal=j)
    j.close()
    st = server.server.config.app.state.microscope
    n = st.n_measured
    journal = read_journal(tmp_path / "journal.h5")
    _check_journal_is_this_run(tmp_path / "journal.h5", journal, mic, cfg, 10, 2)
    assert st.n_measured == n == len(journal["label"])
    with pytest.raises(Exception, match="from another run"):
        _check_journal_is_this_run(tmp_path / "journal.h5", journal, mic, RunConfig(SamplingConfig(seed=5)), 10, 2)


# ----------------------------------------------- killing the server during a run

def _start_server(spec_file, port, state_dir, dwell):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), SLADS_EDS_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "napari_slads_eds", "serve", "--specimen", str(spec_file),
                             "--port", str(port), "--state-dir", str(state_dir), "--dwell-delay", str(dwell),
                             "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"the server did not start: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start within 30 s")


def test_server_killed_twice_mid_run_loses_nothing_and_measures_nothing_twice(specimen, truth, erd, tmp_path):
    spec_file = tmp_path / "specimen.npz"
    save_specimen(specimen, spec_file)
    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    state = tmp_path / "state"
    cfg = RunConfig(SamplingConfig(fraction=0.25, batch=2, batch_mode="pseudo", overlap=True, seed=2), send_maps=False)
    ref_s = Sampler(truth.shape, 2, erd, truth=truth)
    acquire(Ctx(), ref_s, specimen.measure, classify, cfg)
    target = int(round(0.25 * truth.size))

    proc = _start_server(spec_file, port, state, 0.002)
    procs = [proc]
    try:
        ctx = Ctx()
        mic = HttpMicroscope(f"http://127.0.0.1:{port}", n_phases=2, token=TOKEN, phase_map=truth,
                             backoff=(0.05, 0.2), outage_timeout=60)
        mic.attach_context(ctx)
        s = Sampler(mic.shape, 2, erd, truth=truth)
        j = Journal(tmp_path / "journal.h5", P, {})
        out = {}
        run = threading.Thread(target=lambda: out.update(r=acquire(ctx, s, mic.measure, classify, cfg, journal=j)))
        run.start()
        for kill_at in (target // 3, 2 * target // 3):
            while sum(len(r["positions"]) for r in read_measured_log(state)) < kill_at:
                assert run.is_alive()
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            time.sleep(0.5)                           # the run waits, retrying
            proc = _start_server(spec_file, port, state, 0.002)
            procs.append(proc)
        run.join(120)
        j.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
    assert "r" in out, "the run did not finish"
    assert mic.stats["outages"] == 2
    assert sum("paused" in t for t in ctx.logs) == 2 and sum("is back" in t for t in ctx.logs) == 2
    jj = read_journal(tmp_path / "journal.h5")
    jpos = [tuple(p) for p in jj["position"]]
    # nothing lost: every spectrum the run used is in the journal, exactly the uninterrupted run's
    assert len(jpos) == target == len(set(jpos))
    assert np.array_equal(s.mask, ref_s.mask) and s.td == ref_s.td
    assert np.array_equal(jj["spectrum"], specimen.measure(jj["position"]))
    # nothing measured twice: the server's record over all three lives holds each spot once
    spos = [tuple(p) for r in read_measured_log(state) for p in r["positions"]]
    assert len(spos) == len(set(spos)) and set(spos) == set(jpos)


# --------------------------------------------------------------------- command line

def test_cli_errors_are_one_line(tmp_path, capsys):
    from napari_slads_eds.cli import main

    assert main(["serve", "--specimen", str(tmp_path / "none.npz")]) == 2
    assert main(["acquire", "--microscope", "http://127.0.0.1:1", "--models", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "specimen file not found" in err[0] and "models/erd_model.npz is missing" in err[1]


@pytest.mark.engine
@pytest.mark.slow
def test_cli_acquire_against_serve_equals_the_run_it_took_its_models_from(sample_dir, tmp_path, capsys):
    """slads-eds acquire (engine, Keras classifier) against the reference server serving a run's
    specimen: the same selections, mask and TD as the run itself, and --resume measures nothing."""
    from napari_slads_eds.cli import main
    from napari_slads_eds.pipeline import RunSettings, prepare_experiment, run_experiment

    exp = prepare_experiment(sample_dir / "sem_nanoporous_gold_inlens.png", 2,
                             RunSettings(size=32, downsample=4, fraction=0.2, seed=3, epochs=3))
    ref = run_experiment(exp, tmp_path / "run")
    (tmp_path / "token").write_text(TOKEN + "\n")
    app = create_app(exp.specimen, token=TOKEN)
    with ServerThread(app) as srv:
        args = ["acquire", "--microscope", srv.url, "--models", str(tmp_path / "run"), "--out", str(tmp_path / "acq"),
                "--fraction", "0.2", "--seed", "3", "--truth", str(tmp_path / "run"),
                "--token-file", str(tmp_path / "token"), "--quiet"]
        assert main(args) == 0
        n = app.state.microscope.n_measured
        assert main(args + ["--resume"]) == 0                # all in the journal: nothing measured again
        assert app.state.microscope.n_measured == n == ref["n_measured"]
        (tmp_path / "wrong").write_text("not-the-token\n")
        assert main(args + ["--fraction", "0.3"]) == 2                # a run is there: refused, nothing measured
        assert main(args[:-3] + ["--token-file", str(tmp_path / "wrong"), "--quiet", "--out",
                                 str(tmp_path / "other")]) == 2
        assert app.state.microscope.n_measured == n
    err = capsys.readouterr().err
    assert "--resume" in err and "HTTP 401" in err
    got = json.loads((tmp_path / "acq" / "result.json").read_text())
    from napari_slads_eds.run_folder import RunResult

    assert sorted(got) == list(RunResult.json_keys()) and got["mode"] == "microscope"
    assert got["td"] == ref["td"] and got["n_measured"] == ref["n_measured"]
    run = np.load(tmp_path / "acq" / "run.npz")
    assert np.array_equal(run["positions"], ref["positions"]) and np.array_equal(run["mask"], ref["mask"])


def test_connection_check_refuses_a_bad_port_or_token_before_any_request():
    from napari_slads_eds._validation import InputError
    from napari_slads_eds.microscope import read_microscope_info

    for url in ("http://127.0.0.1:abc", "http://[::1"):
        with pytest.raises(InputError, match="not a valid URL"):
            read_microscope_info(url, timeout=1)
    for token in ("tök", "two words", "a\nb"):
        with pytest.raises(InputError, match="printable ASCII"):
            read_microscope_info("http://127.0.0.1:9", token=token, timeout=1)
