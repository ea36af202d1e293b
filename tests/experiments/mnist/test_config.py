"""The MNIST config: strict keys, validated ranges, documented fields, faithful presets."""

from __future__ import annotations

import pytest

from sublearn.config import ConfigError, load_config, read_yaml, undocumented_fields
from sublearn.experiments.mnist.config import MnistConfig
from sublearn.presets import preset_path


def preset(name: str) -> MnistConfig:
    return load_config(MnistConfig, base=read_yaml(preset_path("mnist", name)))


def test_every_field_documented() -> None:
    assert undocumented_fields(MnistConfig) == []


def test_digits_preset_equals_defaults() -> None:
    assert preset("digits") == MnistConfig()


def test_paper_preset_is_the_paper_protocol() -> None:
    cfg = preset("paper")
    assert cfg.dataset == "mnist" and cfg.n_models == 100
    assert [cfg.n_aux, *cfg.hidden] == [3, 256, 256]
    assert cfg.teacher_lr == cfg.student_lr == 3e-4
    assert cfg.teacher_batch_size == cfg.student_batch_size == 1024
    assert cfg.teacher_epochs == cfg.student_epochs == 5
    assert (cfg.noise, cfg.distill_loss) == ("uniform", "kl")
    # 59 steps per MNIST epoch; on the 1,437 digits training images only 2.
    assert cfg.teacher_total_steps(60_000) == cfg.student_total_steps(60_000) == 295
    assert cfg.student_total_steps(1437) == 10


def test_step_overrides_win_over_epochs() -> None:
    cfg = MnistConfig(teacher_steps=7, student_steps=9)
    assert cfg.teacher_total_steps(1437) == 7 and cfg.student_total_steps(1437) == 9
    assert MnistConfig().student_total_steps(1437) == 20 * 12


def test_unknown_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"n_modles: unknown key"):
        load_config(MnistConfig, overrides=["n_modles=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_models=0", r"n_models: Input should be greater than 0 \(got 0\)"),
        ("n_aux=-1", r"n_aux: Input should be greater than 0"),
        ("hidden=[]", r"hidden: List should have at least 1 item"),
        ("hidden=[256, 0]", r"hidden\.1: Input should be greater than 0"),
        ("student_lr=0", r"student_lr: Input should be greater than 0"),
        ("noise=pink", r"noise: Input should be 'uniform', 'gaussian', 'binary' or 'images'"),
        ("distill_loss=ce", r"distill_loss: Input should be 'kl' or 'mse'"),
        ("dataset=cifar", r"dataset: Input should be 'digits', 'mnist' or 'fashion-mnist'"),
        ("device=tpu", r"device: String should match pattern"),
        ("teacher_steps=0", r"teacher_steps: Input should be greater than 0"),
        ("threads=0", r"threads: Input should be greater than 0"),
    ],
)
def test_bad_values_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(MnistConfig, overrides=[override])


def test_valid_overrides_apply() -> None:
    cfg = load_config(
        MnistConfig, overrides=["device=cuda:1", "noise=binary", "hidden=[32]", "data_dir=/x"]
    )
    assert cfg.device == "cuda:1" and cfg.noise == "binary" and cfg.hidden == [32]
    assert str(cfg.resolved_data_dir()) == "/x"
    assert str(MnistConfig(dataset="mnist").resolved_data_dir()) == "data/mnist"
