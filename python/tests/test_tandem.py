"""The tandem Python module against tandem-train: the same losses to the bit, a numpy data source
that learns, errors, callback exceptions, steering, the GIL, checkpoints, and a 2-rank mpirun.

Run from the repository root with TANDEM_BIN set to the build's bin directory (ctest does)."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tandem

ROOT = os.getcwd()
BIN = os.environ.get("TANDEM_BIN", os.path.join(ROOT, "build", "bin"))
TINY = os.path.join(ROOT, "examples", "configs", "tiny.toml")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe", "--mca", "mpi_yield_when_idle", "1",
          "-x", "OMP_NUM_THREADS=1"]
# Few steps of the tiny model; eval once at the end.
SHORT = {"train.steps": 4, "train.eval_batches": 1, "train.threads": 1}


def cli(args, tmp_path, name, launcher=()):
    summary = tmp_path / f"{name}.json"
    subprocess.run([*launcher, os.path.join(BIN, "tandem-train"), TINY, *args,
                    "--summary-json", str(summary)], check=True, capture_output=True)
    return json.loads(summary.read_text())


def sets(overrides):
    out = []
    for key, value in overrides.items():
        value = str(value).lower() if isinstance(value, bool) else value
        out += ["--set", f"{key}={value}"]
    return out


def walk(split, step, sequence, length, dtype=np.int64):
    """t -> (5t + 3) mod 256 from a start given by (split, step, sequence): always predictable."""
    t = (step * 1000003 + sequence * 7919 + (0 if split == "train" else 17)) % 256
    out = np.empty(length, dtype=dtype)
    for i in range(length):
        out[i] = t
        t = (5 * t + 3) % 256
    return out


def test_version_is_the_cli_s():
    out = subprocess.run([os.path.join(BIN, "tandem-train"), "--version"], check=True,
                         capture_output=True, text=True).stdout
    assert out.startswith(f"tandem-train {tandem.__version__} (commit ")
    assert tandem.__version__.count(".") == 2


def test_losses_equal_the_cli_to_the_bit(tmp_path):
    overrides = {**SHORT, "train.lr": 0.002, "model.router_bias_update_rate": 0.002}
    expected = cli(sets(overrides), tmp_path, "cli")
    got = tandem.Trainer(TINY, overrides).run()
    assert got["losses"] == expected["losses"]  # floats compared exactly
    assert [list(e) for e in got["eval_losses"]] == expected["eval_losses"]
    assert got["params"] == expected["params"] and got["steps"] == 4
    # The same config given as TOML text and as a nested dict trains the same.
    text = open(TINY).read()
    from_text = tandem.Trainer(text, overrides).run()
    assert from_text["losses"] == expected["losses"]
    nested = {}
    for key, value in overrides.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    from_dict = tandem.Trainer(TINY, nested).run()
    assert from_dict["losses"] == expected["losses"]


def test_numpy_data_source_learns_and_resumes_exactly(tmp_path):
    trainer = tandem.Trainer(TINY, {"train.steps": 1})
    length = trainer.config("model.seq_len") + 1
    calls = []

    def data(split, step, sequence):
        calls.append((split, step, sequence))
        return walk(split, step, sequence, length, np.uint16)

    steps = {**SHORT, "train.steps": 40, "train.eval_interval": 20, "checkpoint.dir": str(tmp_path / "ck"),
             "checkpoint.interval": 20}
    whole = tandem.Trainer(TINY, steps, data=data).run()
    assert whole["losses"][0] > 5 and whole["losses"][-1] < 0.5, whole["losses"]
    assert whole["eval_losses"][-1][1] < 0.5
    assert {c[0] for c in calls} == {"train", "held_out"}
    # A pure function of (split, step, sequence): resuming from step 20 trains steps 21..40 again
    # with the same losses.
    again = tandem.Trainer(TINY, {**steps, "checkpoint.dir": str(tmp_path / "ck2")},
                           data=lambda *a: walk(*a, length, np.int32),
                           resume=str(tmp_path / "ck" / "step-00000020")).run()
    assert again["first_step"] == 20 and again["losses"] == whole["losses"][20:]


@pytest.mark.parametrize("returned, error, text", [
    (lambda n: np.zeros(n - 1, np.int64), ValueError, "1-D integer array of model.seq_len + 1"),
    (lambda n: np.zeros(n, np.float32), ValueError, "float32"),
    (lambda n: [0] * n, None, None),  # a list is an array of integers: accepted
    (lambda n: "tokens", ValueError, "<U6"),
    (lambda n: None, ValueError, "() object"),
    (lambda n: np.full(n, -1, np.int64), ValueError, "token 0 is -1"),
    (lambda n: np.full(n, 300, np.int64), tandem.Error, "outside the vocabulary [0, 256)"),
])
def test_bad_data_is_refused_with_the_reason(returned, error, text):
    length = 129

    def data(split, step, sequence):
        return returned(length)

    trainer = tandem.Trainer(TINY, {**SHORT, "train.steps": 1}, data=data)
    if error is None:
        trainer.run()
        return
    with pytest.raises(error) as raised:
        trainer.run()
    assert text in str(raised.value)


def test_errors_carry_the_cli_s_messages(tmp_path):
    with pytest.raises(tandem.UsageError, match="did you mean 'train.steps'"):
        tandem.Trainer(TINY, {"train.stepz": 3})
    with pytest.raises(TypeError, match="overrides is a dict"):
        tandem.Trainer(TINY, ["train.steps=3"])
    with pytest.raises(TypeError, match="resume is a path"):
        tandem.Trainer(TINY, resume=3)
    with pytest.raises(TypeError, match="config key train.steps: ndarray"):
        tandem.Trainer(TINY, {"train.steps": np.array([4])})
    assert tandem.Trainer(TINY, {"train.steps": np.int32(4), "train.lr": np.float32(0.5),
                                 "parallel.zero1": np.bool_(True)}).config("train.steps") == 4
    with pytest.raises(tandem.Error, match="train.steps"):
        tandem.Trainer(TINY, {"train.steps": -1})
    with pytest.raises(tandem.Error, match="is not an integer"):
        tandem.Trainer(TINY, {"train.steps": 2.5})
    with pytest.raises(TypeError, match="config key train.steps: list"):
        tandem.Trainer(TINY, {"train.steps": [1]})
    with pytest.raises(tandem.Error, match="does not exist"):
        tandem.Trainer(str(tmp_path / "missing.toml"))
    bad = tandem.Trainer(TINY, {**SHORT, "data.path": str(tmp_path / "none.txt")})
    with pytest.raises(tandem.UsageError, match="data.path .*does not exist"):
        bad.run()
    # The CLI says the same of the same config.
    out = subprocess.run([os.path.join(BIN, "tandem-train"), TINY, "--set", "train.stepz=3"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "did you mean 'train.steps'" in out.stderr
    with pytest.raises(tandem.Error, match="must be a number in \\(0, 1\\]"):
        tandem.Trainer(TINY, SHORT).set_learning_rate(float("nan"))
    with pytest.raises(tandem.Error, match="checkpoint.dir is not set"):
        tandem.Trainer(TINY, SHORT).checkpoint()


def test_a_callback_exception_stops_cleanly_and_is_raised(tmp_path):
    seen = []

    def on_step(s):
        seen.append(s["step"])
        if s["step"] == 2:
            raise KeyError("from the callback")

    trainer = tandem.Trainer(TINY, {**SHORT, "train.steps": 10, "checkpoint.dir": str(tmp_path)})
    with pytest.raises(KeyError, match="from the callback"):
        trainer.run(on_step=on_step)
    # Not called again; every rank stopped at the next step boundary (step 2's had been agreed
    # before its callback ran), after a checkpoint of the last step trained, which loads.
    assert seen == [1, 2]
    saved = sorted(p for p in os.listdir(tmp_path) if p.startswith("step-"))
    assert saved == ["step-00000003"]
    params = tandem.load_checkpoint(tmp_path / saved[0])
    assert params["embedding.weight"].shape == (256, 128)


def test_steering_from_a_callback(tmp_path):
    trainer = tandem.Trainer(TINY, {**SHORT, "train.steps": 8, "checkpoint.dir": str(tmp_path)})
    replies = {}
    steps = []

    def on_step(s):
        steps.append(s)
        if s["step"] == 1:
            replies["lr"] = trainer.set_learning_rate(1e-5)
            with pytest.raises(tandem.Error, match="on the training thread"):
                replies["lr"].wait()
        if s["step"] == 4:
            replies["stop"] = trainer.stop()

    summary = trainer.run(on_step=on_step)
    lr = replies["lr"].wait()
    assert lr["ok"], lr
    at = lr["step"]
    assert [s["learning_rate"] for s in steps if s["step"] == at] == [1e-5]
    stop = replies["stop"].wait()
    assert stop["ok"] and summary["stopped"] and summary["stopped_by_request"]
    assert summary["steps"] == stop["step"] < 8
    assert os.path.isdir(stop["path"])
    # Once the run is over, commands are answered at once, not applied.
    late = trainer.pause().wait()
    assert not late["ok"] and "ended" in late["message"]
    with pytest.raises(tandem.Error, match="runs once"):
        trainer.run()


def test_pause_from_a_callback_and_resume_from_another_thread():
    trainer = tandem.Trainer(TINY, {**SHORT, "train.steps": 5})
    paused = {}

    def resume_later():
        paused["pause"] = paused["reply"].wait(timeout=60)
        paused["resume"] = trainer.resume().wait(timeout=60)

    def on_step(s):
        if s["step"] == 2:
            paused["reply"] = trainer.pause()
            paused["thread"] = threading.Thread(target=resume_later)
            paused["thread"].start()

    summary = trainer.run(on_step=on_step)
    paused["thread"].join()
    assert paused["pause"]["ok"] and paused["resume"]["ok"], paused
    assert paused["resume"]["step"] == paused["pause"]["step"] and summary["steps"] == 5
    # A reply not yet answered, waited for with a timeout, says so.
    assert tandem.Trainer(TINY, SHORT).pause().wait(timeout=0.05) is None


def test_the_gil_is_released_while_tandem_trains():
    counted = [0]
    done = threading.Event()

    def count():
        while not done.is_set():
            counted[0] += 1

    thread = threading.Thread(target=count)
    thread.start()
    try:
        tandem.Trainer(TINY, {**SHORT, "train.steps": 3}).run()
    finally:
        done.set()
        thread.join()
    # With the GIL held through the run, the counter would move only between callbacks.
    assert counted[0] > 100000, counted[0]


def test_load_checkpoint_equals_tandem_checkpoint_export(tmp_path):
    from safetensors.numpy import load_file

    tandem.Trainer(TINY, {**SHORT, "train.steps": 2, "checkpoint.dir": str(tmp_path)}).run()
    ck = tmp_path / "step-00000002"
    exported = tmp_path / "model.safetensors"
    subprocess.run([os.path.join(BIN, "tandem-checkpoint"), "export", str(ck), str(exported)],
                   check=True, capture_output=True)
    reference = load_file(str(exported))
    got = tandem.load_checkpoint(ck)
    assert sorted(got) == sorted(reference)
    for name, array in reference.items():
        assert got[name].dtype == np.float32 and np.array_equal(got[name], array), name
    (ck / "rank-00000.safetensors").write_bytes(b"damaged")
    with pytest.raises(tandem.Error):
        tandem.load_checkpoint(ck)


RANK_SCRIPT = """
import json, sys, tandem
t = tandem.Trainer(sys.argv[1], json.loads(sys.argv[2]))
s = t.run()
if t.rank == 0:
    open(sys.argv[3], "w").write(json.dumps({"losses": s["losses"], "world": t.world_size}))
"""


def test_two_ranks_under_mpirun_equal_the_cli(tmp_path):
    overrides = {**SHORT, "train.steps": 3}
    expected = cli(sets(overrides), tmp_path, "cli2", launcher=[*MPIRUN, "-np", "2"])
    out = tmp_path / "py2.json"
    subprocess.run([*MPIRUN, "-np", "2", sys.executable, "-c", RANK_SCRIPT, TINY,
                    json.dumps(overrides), str(out)], check=True, timeout=300)
    got = json.loads(out.read_text())
    assert got["world"] == 2 and got["losses"] == expected["losses"]


def test_metrics_and_the_live_page_from_python():
    # In a Python process civetweb's threads keep their own 100 KiB stacks (tandem's floor,
    # monitoring/thread_stack_floor.h, binds only in executables): scrapes must still answer.
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pages = []

    def on_step(s):
        if s["step"] == 2:
            def scrape():
                for _ in range(3):
                    for path in ("/metrics", "/status"):
                        url = f"http://127.0.0.1:{port}{path}"
                        pages.append(urllib.request.urlopen(url, timeout=10).read().decode())
            worker = threading.Thread(target=scrape)
            worker.start()
            worker.join()

    tandem.Trainer(TINY, {**SHORT, "train.steps": 3, "monitoring.metrics_port": port}).run(on_step=on_step)
    assert len(pages) == 6
    assert "tandem_steps_total" in pages[0] and "<svg" in pages[1]


INTERRUPTED_SCRIPT = """
import sys, numpy as np, tandem
data = (lambda split, step, seq: np.arange(129) % 256) if sys.argv[3] == "python" else None
t = tandem.Trainer(sys.argv[1], {"train.steps": 200, "train.threads": 1, "train.eval_batches": 1,
                                 "checkpoint.dir": sys.argv[2]}, data=data)
t.run(on_step=lambda s: print("STEP", s["step"], flush=True))
"""


@pytest.mark.parametrize("data", ["files", "python"])
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, data):
    import signal

    run = subprocess.Popen([sys.executable, "-c", INTERRUPTED_SCRIPT, TINY, str(tmp_path), data],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = run.stdout.readline()
    while first and not first.startswith("STEP"):  # tandem's own lines come first
        first = run.stdout.readline()
    assert first.startswith("STEP 1"), first
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    steps = [int(line.split()[1]) for line in (first + out).splitlines() if line.startswith("STEP")]
    assert steps[-1] < 200
    saved = [p for p in os.listdir(tmp_path) if p.startswith("step-")]
    assert len(saved) == 1 and int(saved[0][5:]) >= steps[-1], (saved, steps)
    assert "stopped on request (the program's stop_when" in out, out[-2000:]


def torchrun_style(command, tmp_path, name):
    """2 processes with torchrun's variables (the UCX world, no MPI); both must succeed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        log = open(tmp_path / f"{name}{rank}.log", "w")
        runs.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for run, log in runs:
        assert run.wait(timeout=300) == 0, (tmp_path / f"{name}0.log").read_text()[-3000:]
        log.close()


def test_two_ranks_torchrun_style_equal_the_cli(tmp_path):
    overrides = {**SHORT, "train.steps": 3}
    summary = tmp_path / "cli.json"
    torchrun_style([os.path.join(BIN, "tandem-train"), TINY, *sets(overrides), "--summary-json",
                    str(summary)], tmp_path, "cli")
    out = tmp_path / "py.json"
    torchrun_style([sys.executable, "-c", RANK_SCRIPT, TINY, json.dumps(overrides), str(out)],
                   tmp_path, "py")
    got = json.loads(out.read_text())
    assert got["world"] == 2 and got["losses"] == json.loads(summary.read_text())["losses"]
    assert "UCX" in (tmp_path / "py0.log").read_text()
