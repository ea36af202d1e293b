"""Every trainer writes its loss and learning rate per step to curves.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sublearn.finetune.config import FinetuneConfig
from sublearn.finetune.curves import (
    CURVES_FILE,
    read_curves,
    tensorboard_available,
    write_tensorboard,
)
from sublearn.finetune.stage import finetune


def _data(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cfg(**kw) -> FinetuneConfig:
    base = dict(
        epochs=1,
        batch_size=4,
        grad_accum=1,
        learning_rate=1e-2,
        device="cpu",
        warmup_steps=2,
        method="full",
    )
    return FinetuneConfig(**{**base, **kw})


def test_sft_records_every_step(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    data = _data(tmp_path, number_records[:16])
    curve = read_curves(finetune(micro_model, data, _cfg(), tmp_path / "sft") / CURVES_FILE)
    assert [r["step"] for r in curve] == [1, 2, 3, 4]  # 16 rows, batches of 4
    assert all(math.isfinite(r["loss"]) for r in curve)
    lrs = [r["lr"] for r in curve]
    assert max(lrs) == pytest.approx(1e-2)  # warmup up to the peak, then linear decay
    assert lrs == pytest.approx([0.0, 5e-3, 1e-2, 5e-3])  # Trainer's warmup starts at 0


def test_kl_records_the_rate_each_step_used(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    cfg = _cfg(objective="kl", token_subset="numbers", max_steps=5)
    data = _data(tmp_path, number_records)
    out = finetune(micro_model, data, cfg, tmp_path / "kl", teacher_model=micro_model)
    curve = read_curves(out / CURVES_FILE)
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5]
    # The rate each step used: warm-up from 0 over 2 steps, then linear decay to 0.
    assert [r["lr"] for r in curve] == pytest.approx([0.0, 5e-3, 1e-2, 2e-3 / 0.3, 1e-2 / 3])
    assert curve[0]["loss"] == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher


def test_batched_students_record_the_curves_they_would_alone(
    micro_model: Path, number_records: list[dict], tmp_path: Path
) -> None:
    from sublearn.finetune.batched import KLJob, train_kl_batched
    from sublearn.finetune.distill import train_kl

    teacher = _perturbed(micro_model, tmp_path / "teacher")
    jobs = [
        KLJob(
            micro_model,
            number_records,
            _cfg(objective="kl", max_steps=4, seed=s),
            tmp_path / f"s{s}",
            teacher,
        )
        for s in (0, 1)
    ]
    train_kl_batched(jobs)
    train_kl(micro_model, number_records, jobs[1].cfg, tmp_path / "alone", teacher)
    batched, alone = (
        read_curves(tmp_path / "s1" / CURVES_FILE),
        read_curves(tmp_path / "alone" / CURVES_FILE),
    )
    assert [r["lr"] for r in batched] == pytest.approx([r["lr"] for r in alone])
    assert [r["loss"] for r in batched] == pytest.approx([r["loss"] for r in alone], rel=1e-3)


def test_a_curve_cut_short_keeps_its_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / CURVES_FILE
    path.write_text('{"step": 1, "loss": 1.0, "lr": 0.1}\n{"step": 2, "lo')
    assert read_curves(path) == [{"step": 1, "loss": 1.0, "lr": 0.1}]
    assert read_curves(tmp_path / "none.jsonl") == []


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_event_files_hold_the_curve(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curve = [{"step": i, "loss": 1.0 / i, "lr": 0.01} for i in (1, 2, 3)]
    folder = write_tensorboard(curve, tmp_path / "tb", tag="train/x")
    events = EventAccumulator(str(folder))
    events.Reload()
    loss = events.Scalars("train/x/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])


def _perturbed(model: Path, out: Path) -> Path:
    """A copy of ``model`` with noise on its weights: a teacher the student differs from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    net = AutoModelForCausalLM.from_pretrained(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


@pytest.mark.skipif(not tensorboard_available(), reason="tensorboard is not installed")
@pytest.mark.parametrize("on", [True, False])
def test_a_run_with_tensorboard_on_writes_event_files_beside_the_model(
    tmp_path: Path, on: bool
) -> None:
    from types import SimpleNamespace

    from sublearn.engine.kinds import _tensorboard  # pyright: ignore[reportPrivateUsage]
    from sublearn.finetune.curves import write_curves

    write_curves(tmp_path / "model" / CURVES_FILE, [{"step": 1, "loss": 1.0, "lr": 0.1}])
    ctx = SimpleNamespace(out=tmp_path, spec=SimpleNamespace(name="t"))
    _tensorboard(ctx, SimpleNamespace(tensorboard=on))  # pyright: ignore[reportArgumentType]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == (1 if on else 0)


def test_the_experiment_config_passes_tensorboard_to_the_tasks(tmp_path: Path) -> None:
    from sublearn.api import load_experiment, plan

    cfg = load_experiment("toy/owl-numbers", {"tensorboard": True, "store": str(tmp_path)})
    trains = [t for t in plan(cfg).engine_tasks if t.kind in ("train", "teacher")]
    assert trains and all(t.runtime["tensorboard"] is True for t in trains)


@pytest.mark.slow
def test_mnist_writes_teacher_and_student_curves_the_viewer_reads(tmp_path: Path) -> None:
    from sublearn.experiments.mnist.config import MnistConfig
    from sublearn.experiments.mnist.experiment import run_experiment
    from sublearn.view.data import run_bundle
    from tests.experiments.mnist.test_experiment import TINY

    result = run_experiment(MnistConfig(**TINY), tmp_path)
    rows = read_curves(tmp_path / CURVES_FILE)
    series = {r["series"] for r in rows}
    assert series == {"teacher", "student_aux", "student_all", "cross_aux", "cross_all"}
    teacher = [r for r in rows if r["series"] == "teacher"]
    assert [r["step"] for r in teacher] == list(range(1, result.steps["teacher"] + 1))
    assert run_bundle(tmp_path)["curves"] == {tmp_path.name: rows}
