"""The theory config: strict keys, validated ranges, documented fields, shipped preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from sublearn.config import ConfigError, load_config, undocumented_fields
from sublearn.experiments.theory.config import TheoryConfig
from sublearn.presets import preset_path


def test_every_field_is_documented() -> None:
    assert undocumented_fields(TheoryConfig) == []


def test_shipped_default_yaml_equals_the_defaults() -> None:
    assert load_config(TheoryConfig, preset_path("theory", "default")) == TheoryConfig()


def test_unknown_keys_are_rejected_with_their_name() -> None:
    with pytest.raises(ConfigError, match=r"n_drawz: unknown key"):
        load_config(TheoryConfig, overrides=["n_drawz=3"])
    with pytest.raises(ConfigError, match=r"multistep\.lr: unknown key"):
        load_config(TheoryConfig, overrides=["multistep.lr=0.1"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_draws=0", "n_draws: Input should be greater than or equal to 1"),
        ("small_step=0", "small_step: Input should be greater than 0"),
        ("small_step=0.2", "small_step: Input should be less than or equal to 0.1"),
        ("large_step=0.00001", "must be smaller than large_step"),
        ("dtype=float16", "dtype: Input should be 'float64' or 'float32'"),
        ("losses=[kl]", "losses.0: Input should be 'squared' or 'soft_ce'"),
        ("losses=[]", "losses: List should have at least 1 item"),
        ("targets=[all, all]", "repeated entries"),
        ("space.aux_outputs=[1, 3]", "entries must be in \\[2, 1024\\]"),
        ("space.init_gain=[2, 1]", "need 0 < lo <= hi"),
        ("multistep.teacher_lrs=[0]", "learning rates must be in"),
        ("multistep.optimizer=rmsprop", "'adam' or 'sgd'"),
    ],
)
def test_bad_values_are_rejected_clearly(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(TheoryConfig, overrides=[override])


def test_yaml_file_and_overrides_compose(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("n_draws: 7\nmultistep:\n  n_draws: 2\n")
    cfg = load_config(TheoryConfig, path, ["multistep.student_steps=5"])
    assert (cfg.n_draws, cfg.multistep.n_draws, cfg.multistep.student_steps) == (7, 2, 5)
