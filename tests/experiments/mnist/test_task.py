"""``sublearn mnist`` as an engine task: its key, and a run killed mid-task then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sublearn.cli.main import app
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.experiments.mnist.task import keyed_params, mnist_task
from tests.experiments.mnist.test_data import write_idx_dataset

# Long enough (a few seconds of training) to be killed in the middle. The kill test took
# 15 s on a 2-core machine at load 6, 122-139 s at load 9-10 and 594 s at load 20: slow.
LONG = ["--models", "3", "--threads", "1", "--device", "cpu", "-s", "hidden=[64]"]
LONG += ["-s", "teacher_steps=300", "-s", "student_steps=300"]


def test_the_key_ignores_speed_settings_and_reads_idx_files_by_content(tmp_path: Path) -> None:
    base = MnistConfig(n_models=2)
    fast = base.model_copy(update={"threads": 2, "device": "cpu", "eval_batch_size": 10})
    assert mnist_task(fast).key == mnist_task(base).key
    assert mnist_task(base.model_copy(update={"seed": 1})).key != mnist_task(base).key

    write_idx_dataset(tmp_path / "a", n_train=20, n_test=10, gz=False)
    write_idx_dataset(tmp_path / "b", n_train=20, n_test=10, gz=False)
    a = MnistConfig(dataset="mnist", data_dir=tmp_path / "a")
    b = MnistConfig(dataset="mnist", data_dir=tmp_path / "b")
    assert keyed_params(a)["data_files"] and mnist_task(a).key == mnist_task(b).key
    image = tmp_path / "b" / "t10k-images-idx3-ubyte"
    raw = bytearray(image.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of the test set
    image.write_bytes(bytes(raw))
    assert mnist_task(a).key != mnist_task(b).key


def _running(store: Path) -> bool:
    """Whether a process is writing the mnist task (its temporary folder exists)."""
    return any((store / "mnist").glob(".*.tmp-*")) if (store / "mnist").is_dir() else False


@pytest.mark.slow
def test_a_run_killed_mid_task_reruns_to_the_same_result(tmp_path: Path) -> None:
    store = tmp_path / "store"
    command = [sys.executable, "-m", "sublearn.cli.main", "mnist", *LONG, "--store", str(store)]
    proc = subprocess.Popen(
        [*command, "-o", str(tmp_path / "killed")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _running(store) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(store), "the task never started"
        time.sleep(0.5)  # into the training
        assert proc.poll() is None, "the task finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not list(store.rglob("done.json"))  # nothing half-written is trusted
    assert not (tmp_path / "killed").exists()  # the run folder is filled from the store

    rerun = CliRunner().invoke(
        app, ["mnist", *LONG, "--store", str(store), "-o", str(tmp_path / "r")]
    )
    assert rerun.exit_code == 0, rerun.output
    assert "found in the store" not in rerun.output
    assert not _running(store)  # the killed run's temporary folder is gone
    assert len(list(store.rglob("done.json"))) == 1

    fresh = tmp_path / "fresh-store"
    again = CliRunner().invoke(
        app, ["mnist", *LONG, "--store", str(fresh), "-o", str(tmp_path / "f")]
    )
    assert again.exit_code == 0, again.output
    for name in ("summary.json", "per_model.csv"):
        assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "f" / name).read_bytes()
