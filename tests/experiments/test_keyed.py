"""The keyed form of the commands' configs: speed settings declared out, files by content."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sublearn.audit.config import AuditConfig, Detector, FrequencyDetector
from sublearn.audit.task import AuditParams, audit_task
from sublearn.defend.config import CanonicalizeDefence, Defence, DefendConfig
from sublearn.defend.task import DefendFileParams, defend_task
from sublearn.errors import DataError
from sublearn.experiments.keyed import file_digest, require_unchanged
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.experiments.mnist.task import MnistParams, mnist_task
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.experiments.theory.task import TheoryParams, theory_task
from sublearn.keys import field_paths, key_params, runtime_params, speed_paths

SPEED_NAMES = {"device", "threads", "batch_size", "eval_batch_size", "providers"}


@pytest.mark.parametrize("model", [MnistParams, TheoryParams, AuditParams, DefendFileParams])
def test_every_speed_setting_is_declared_out_of_the_key(model: type) -> None:
    named = {p for p in field_paths(model) if p.rsplit(".", 1)[-1] in SPEED_NAMES}
    assert named, model.__name__  # the check reads the model's real fields
    assert named <= speed_paths(model), sorted(named - speed_paths(model))


def test_audit_and_defend_keys_read_content_and_ignore_speed_and_places(tmp_path: Path) -> None:
    data, copy = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    data.write_text('{"messages": []}\n')
    copy.write_text('{"messages": []}\n')
    frequency: list[Detector] = [FrequencyDetector(type="frequency")]
    audit = AuditConfig(data=str(data), control=str(data), detectors=frequency)
    moved = AuditConfig(
        data=str(copy), control=str(copy), detectors=frequency, device="cpu", batch_size=3,
        out=str(tmp_path / "elsewhere"),
    )  # fmt: skip
    assert audit_task(audit).key == audit_task(moved).key
    assert "device" not in audit_task(audit).params["audit"]
    defences: list[Defence] = [CanonicalizeDefence(type="canonicalize")]
    defend = DefendConfig(data=str(data), out=str(tmp_path / "o1.jsonl"), defences=defences)
    other = DefendConfig(
        data=str(copy), out=str(tmp_path / "o2.jsonl"), defences=defences, batch_size=2
    )
    assert defend_task(defend).key == defend_task(other).key
    copy.write_text('{"messages": [1]}\n')
    assert defend_task(defend).key != defend_task(other).key


def test_a_digest_is_of_the_bytes_and_a_change_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    expected = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_digest(path) == expected
    with pytest.raises(DataError, match="no such file"):
        file_digest(tmp_path / "missing")
    require_unchanged({"a": 1}, {"a": 1}, "t")
    with pytest.raises(DataError, match=r"t: its inputs changed.*\(a differ"):
        require_unchanged({"a": 1}, {"a": 2}, "t")


def test_a_command_task_stores_its_params_model_exactly(tmp_path: Path) -> None:
    """Like every engine kind's: the worker validates params and runtime back into the
    kind's model, which gives them back unchanged; the config as given rides in runtime."""
    data = tmp_path / "a.jsonl"
    data.write_text('{"messages": []}\n')
    audit = AuditConfig(
        data=str(data), control=str(data), detectors=[FrequencyDetector(type="frequency")]
    )
    defend = DefendConfig(
        data=str(data),
        out=str(tmp_path / "o.jsonl"),
        defences=[CanonicalizeDefence(type="canonicalize")],
    )
    tasks = {
        MnistParams: (mnist_task(MnistConfig(dataset="digits")), "experiment"),
        TheoryParams: (theory_task(TheoryConfig()), "theory"),
        AuditParams: (audit_task(audit), "audit"),
        DefendFileParams: (defend_task(defend), "defend"),
    }
    for model, (task, keyed) in tasks.items():
        params = task.spec().typed_params()
        assert type(params) is model and task.spec().params_model.endswith(model.__name__)
        assert key_params(params) == task.params and runtime_params(params) == task.runtime
        assert "config" not in task.params and keyed in task.params
        with pytest.raises(ValidationError, match="colour"):
            model.from_spec({**task.params, "colour": "red"}, task.runtime)
