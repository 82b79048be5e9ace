import os
import sys
import time

import numpy as np
import pytest

from napari_slads_eds import Engine, EngineError


@pytest.fixture(scope="module")
def engine():
    eng = Engine()
    yield eng
    eng.close()


@pytest.mark.engine
def test_tensorflow_only_in_engine_process(engine):
    info = engine.run("engine_info")
    assert info["tensorflow"].startswith("2.")
    assert info["tensorflow_loaded"] is True
    assert info["pid"] != os.getpid()
    assert "tensorflow" not in sys.modules


def test_job_errors_reach_the_parent(engine):
    with pytest.raises(EngineError, match="unknown engine job") as ei:
        engine.run("no_such_job")
    assert ei.value.kind == "input"
    # the engine keeps serving after an error
    out = engine.run("call", target="math:hypot", kwargs={})
    assert out == 0.0


def test_input_error_from_library_code_is_reported(engine):
    with pytest.raises(EngineError, match=r"expected \(n, 2\)") as ei:
        engine.run("call", target="napari_slads_eds.reconstruction:reconstruct",
                   kwargs={"shape": (3, 3), "positions": np.zeros((1, 3)), "labels": [1]})
    assert ei.value.kind == "input"


def test_progress_pause_resume_and_graceful_stop(engine):
    job = engine.submit("sleep_steps", steps=400, dt=0.005)
    seen = []
    it = job.messages()
    for msg in it:
        seen.append(msg["done"])
        if msg["done"] == 20:
            engine.pause()

            break
    time.sleep(0.4)
    engine.resume()
    for msg in it:
        seen.append(msg["done"])
        if msg["done"] == 60:
            engine.request_stop()
    assert job.done
    assert 60 <= job.result < 400          # stopped early, returned what it had
    assert seen == sorted(seen)


def test_close_ends_the_process_within_a_second():
    eng = Engine()
    job = eng.submit("sleep_steps", steps=10_000, dt=0.01)
    next(job.messages())
    pid = eng.pid
    t = time.perf_counter()
    eng.close(timeout=1.0)
    assert time.perf_counter() - t < 1.05
    assert not eng.is_alive()
    with pytest.raises(OSError):
        os.kill(pid, 0)   # no such process (reaped, no zombie)


def test_killed_engine_is_reported_not_hung():
    eng = Engine()
    job = eng.submit("sleep_steps", steps=10_000, dt=0.01)
    next(job.messages())
    os.kill(eng.pid, 9)
    with pytest.raises(EngineError, match="ended unexpectedly"):
        for _ in job.messages():
            pass
    eng.close()


def test_script_without_main_guard_runs_once(tmp_path):
    import subprocess

    script = tmp_path / "script.py"
    script.write_text("from napari_slads_eds import Engine\n"
                      "print('START', flush=True)\n"
                      "with Engine() as e:\n"
                      "    print('RESULT', e.run('call', target='math:hypot', kwargs={}), flush=True)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("START") == 1 and "RESULT 0.0" in r.stdout
