"""The Ray executor against a real local Ray cluster that this module starts and stops.

The cluster declares one (logical) GPU so that a GPU measurement's request for one is visible.
"""

import dataclasses
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ray[default]'")

from orca_analysis.catalog.specs import Spec  # noqa: E402
from orca_analysis.cli import main  # noqa: E402
from orca_analysis.executors.ray import RayExecutor  # noqa: E402
from orca_analysis.measurements import MEASUREMENTS, Measurement, Schedule  # noqa: E402
from orca_analysis.results import Record, results_frame  # noqa: E402
from orca_analysis.runner import run_sweep  # noqa: E402
from orca_analysis.study import load_study  # noqa: E402
from orca_analysis.study.schema import Sweep  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def gpus_seen(variant, study):
    """How many GPUs Ray gave the task that ran this."""
    (s, b), *_ = study.workloads.pairs()
    n = len(ray.get_gpu_ids())
    return [Record(study.name, variant.variant_id, "gpus", "gpus", "ray", n, "GPUs", s, b)]


def kill_worker(variant, study):
    os.kill(os.getpid(), signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    # a cluster on loopback for this test only: no token auth, whatever ~/.ray holds (a token there
    # makes `ray start` require one, and a driver then needs RAY_AUTH_MODE=token to send it)
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2"]
    cmd += [
        "--num-gpus=1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
        "--block",
    ]
    head = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert head.poll() is None and time.monotonic() < deadline, "ray start failed"
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # `ray start --block` stops its processes on SIGTERM
        head.wait(90)
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def test_cli_run_on_ray_matches_local_and_resumes(ray_address, tiny_study_path, tmp_path, capsys):
    on_ray = ["run", str(tiny_study_path), "--executor", "ray", "--address", ray_address]
    assert main([*on_ray, "--out", str(tmp_path / "ray")]) == 0
    assert "4 of 4 measurements ok" in capsys.readouterr().err
    assert main(["run", str(tiny_study_path), "--out", str(tmp_path / "local")]) == 0
    keys = ["variant_id", "metric", "method"]
    remote = results_frame(tmp_path / "ray" / "tiny").sort_values(keys)
    local = results_frame(tmp_path / "local" / "tiny").sort_values(keys)
    assert remote["value"].tolist() == local["value"].tolist() and len(remote) == 68  # 4 variants x 17
    assert main([*on_ray, "--out", str(tmp_path / "ray")]) == 0
    assert "nothing new to measure" in capsys.readouterr().err  # the cluster's environment is stored


def test_gpu_requests_isolated_workers_and_dead_workers_on_ray(ray_address, tiny_study_path, tmp_path):
    names = {
        "gpu": Measurement(Spec("gpu"), "asks for a GPU", gpus_seen, Schedule(gpu=True)),
        "cpu": Measurement(Spec("cpu"), "asks for none", gpus_seen),
        "crash": Measurement(Spec("crash"), "kills its Ray worker", kill_worker),
        "params": dataclasses.replace(
            MEASUREMENTS["params"],
            schedule=dataclasses.replace(MEASUREMENTS["params"].schedule, isolated=True),
        ),
    }
    study = load_study(str(tiny_study_path))
    study = dataclasses.replace(
        study,
        sweep=Sweep(),
        measurements=list(names),
        workloads=dataclasses.replace(study.workloads, seq_lens=[32]),
    )
    summary = run_sweep(study, tmp_path, executor=RayExecutor(ray_address, 120), measurements=names)
    assert (summary.planned, summary.failed) == (4, 1)  # the sweep went on past the dead worker
    db = sqlite3.connect(tmp_path / "tiny" / "results.sqlite")
    seen = db.execute(
        "SELECT u.measurement, r.value FROM records r JOIN units u USING (unit_id) WHERE r.metric='gpus'"
    )
    assert dict(seen.fetchall()) == {"gpu": 1, "cpu": 0}
    frame = results_frame(tmp_path / "tiny")
    (crash,) = frame[frame.measurement == "crash"]["note"]
    assert crash == "Ray worker died (crash, or killed from outside)"
    (source,) = db.execute("SELECT source FROM units WHERE measurement='params'").fetchone()
    assert source.startswith("ray ") and " / worker pid " in source  # spawned by its Ray task
