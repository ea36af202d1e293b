"""Where the shipped YAML configs live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

from sublearn.config import ConfigError


def config_root() -> Path:
    """The folder holding the shipped configs (``configs/`` in a checkout)."""
    packaged = Path(__file__).resolve().parent / "configs"  # wheels force-include it here
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def preset_path(group: str, name: str) -> Path:
    """Path of ``configs/<group>/<name>.yaml``, with an error listing the choices.

    Args:
        group: the config group, such as ``mnist`` or ``toy``.
        name: the preset's file name without ``.yaml``.

    Raises:
        ConfigError: if there is no such preset.
    """
    folder = config_root() / group
    path = folder / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ConfigError(
            f"no preset {name!r} in {folder} (choices: {', '.join(choices) or 'none'})"
        )
    return path
