"""The six conditions: cross-init mapping, end-to-end runs and the science regression."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from sublearn.cli.mnist import mnist
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.experiments.mnist.experiment import (
    CONDITIONS,
    derangement,
    idle_cores,
    run_conditions,
    run_experiment,
)
from sublearn.experiments.mnist.model import init_mlp
from sublearn.experiments.mnist.train import Distiller, NoiseSampler, Student

from .test_data import write_idx_dataset

TINY = {"n_models": 2, "teacher_steps": 3, "student_steps": 3, "threads": 1, "device": "cpu"}


@pytest.mark.parametrize("n", [*range(2, 40), 100, 1000])
def test_derangement_has_no_fixed_point(n: int) -> None:
    for seed in range(5):
        sigma = derangement(n, seed)
        assert sorted(sigma.tolist()) == list(range(n))
        assert not np.any(sigma == np.arange(n))
    assert derangement(2, 0).tolist() == [1, 0]


def test_derangement_needs_two() -> None:
    with pytest.raises(ValueError, match="n >= 2"):
        derangement(1, 0)


@pytest.mark.parametrize(("load", "expected"), [(0.2, 2), (0.6, 1), (1.4, 1), (7.0, 1), (None, 2)])
def test_idle_cores(monkeypatch: pytest.MonkeyPatch, load: float | None, expected: int) -> None:
    def getloadavg() -> tuple[float, float, float]:
        if load is None:
            raise OSError("no load average here")
        return (load, load, load)

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", getloadavg)
    assert idle_cores() == expected


def test_teacher_runs_once_per_noise_batch() -> None:
    sizes = [6, 8, 13]
    teacher = init_mlp(3, sizes, torch.Generator().manual_seed(0))
    calls = []
    forward = teacher.forward
    teacher.forward = lambda x: calls.append(x.shape) or forward(x)  # type: ignore[method-assign]
    students = [Student(name, init_mlp(3, sizes), "aux") for name in ("a", "b", "c", "d")]
    distiller = Distiller(teacher, students, lr=1e-3, loss="kl")
    sampler = NoiseSampler("uniform", 3, 5, 6, torch.Generator().manual_seed(1))
    for _ in range(4):
        distiller.step(sampler.sample())
    assert calls == [(3, 5, 6)] * 4


def test_single_model_uses_a_separate_cross_init(tmp_path: Path) -> None:
    cfg = MnistConfig(**{**TINY, "n_models": 1})
    result = run_experiment(cfg, tmp_path)
    assert result.cross_init is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["teacher"]["n"] == 1 and summary["teacher"]["ci95"] == [None, None]
    # A cross student starting from the student's own init would track it exactly.
    assert result.accuracy["cross_all"][0] != result.accuracy["student_all"][0] or (
        result.accuracy["cross_aux"][0] != result.accuracy["student_aux"][0]
    )


def test_runs_are_reproducible() -> None:
    cfg = MnistConfig(**TINY)
    a, b = run_conditions(cfg), run_conditions(cfg)
    for name in CONDITIONS:
        np.testing.assert_array_equal(a.accuracy[name], b.accuracy[name])


def test_digits_science_regression() -> None:
    """The digits default shows subliminal learning at small N (one thread, ~10-20 s)."""
    cfg = MnistConfig(n_models=8, threads=1, device="cpu")
    summary = run_conditions(cfg).summary()
    aux, cross = summary["student_aux"], summary["cross_aux"]
    assert summary["teacher"].mean >= 0.85
    assert aux.mean >= 0.30 and aux.lo > 0.15, aux
    assert cross.lo <= 0.13 and cross.hi >= 0.07, cross  # overlaps [0.07, 0.13]: chance
    assert 0.05 <= summary["reference"].mean <= 0.2


def cli_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command()(mnist)
    return app


def test_cli_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # default run folder lands under runs/ here
    args = ["--models", "3", "--threads", "1", "--device", "cpu", "-s", "teacher_steps=4"]
    result = CliRunner().invoke(cli_app(), [*args, "--set", "student_steps=4"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "mnist-digits-digits"
    assert "student_aux" in result.output and str(Path("runs/mnist-digits-digits")) in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == list(CONDITIONS)
    for entry in summary.values():
        assert set(entry) == {"mean", "ci95", "n"} and entry["n"] == 3
        assert 0 <= entry["mean"] <= 1 and len(entry["ci95"]) == 2
    rows = list(csv.reader((out / "per_model.csv").open()))
    assert rows[0] == ["model", *CONDITIONS] and len(rows) == 4
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "n_models: 3" in (out / "config.yaml").read_text()
    assert json.loads((out / "meta.json").read_text())["command"] == "sublearn mnist"
    timing = json.loads((out / "timing.json").read_text())
    assert timing["steps"] == {"teacher": 4, "student": 4} and len(timing["cross_init"]) == 3


def test_cli_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    args = ["--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 2
    assert "train-images-idx3-ubyte not found" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_cli_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app(), ["-s", "noise=pink", "--models", "0"])
    assert result.exit_code == 2
    assert "noise" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli_app(), ["--preset", "nope"])
    assert result.exit_code == 2 and "no preset 'nope'" in result.output


def test_cli_reads_idx_dataset(tmp_path: Path) -> None:
    """MNIST-format files (784 pixels) go through the same command, gzipped or not."""
    write_idx_dataset(tmp_path / "data", n_train=40, n_test=10, gz=True)
    args = ["--preset", "paper", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data")]
    args += ["--models", "2", "--threads", "1", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(cli_app(), [*args, "-s", "teacher_batch_size=16"])
    assert result.exit_code == 0, result.output
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["layer_sizes"] == [784, 256, 256, 13] and timing["n_test"] == 10
    assert timing["steps"] == {"teacher": 5 * 3, "student": 5}
