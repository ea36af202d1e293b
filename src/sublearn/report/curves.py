"""Training curves of a run: every fine-tune's loss and learning rate per step, one figure.

The curves come from each training task's ``model/curves.jsonl`` in the store (see
:mod:`sublearn.finetune.curves`); the run's ``manifest.json`` says where the tasks are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sublearn.finetune.curves import CURVES_FILE, read_curves
from sublearn.runs import atomic_write_text

TRAINED_KINDS = ("teacher", "train")


def run_curves(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per training task of a run (by task name), its curve rows; tasks without one left out.

    Args:
        manifest: the run's ``manifest.json`` (``{"tasks": [{"kind", "name", "path"}]}``).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for task in manifest.get("tasks", []):
        if task.get("kind") in TRAINED_KINDS and task.get("path"):
            rows = read_curves(Path(task["path"]) / "model" / CURVES_FILE)
            if rows:
                out[task["name"]] = rows
    return out


def curves_figure(curves: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """Loss (top) and learning rate (bottom) per step, one line per training task.

    Args:
        curves: as :func:`run_curves` returns them.
        path: the PNG to write.

    Returns:
        Whether a figure was written (False when there is no curve).
    """
    if not curves:
        return False
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sublearn.runs import atomic_write_bytes

    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        style = "--" if name.startswith("teacher") else "-"
        loss_ax.plot(steps, [r["loss"] for r in rows], style, lw=1, label=name)
        lr_ax.plot(steps, [r["lr"] for r in rows], style, lw=1)
    loss_ax.set_ylabel("training loss")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("optimizer step")
    if len(curves) <= 12:
        loss_ax.legend(fontsize=7, loc="upper right")
    loss_ax.set_title("Training curves (dashed: teachers)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return True


def append_curves_section(report: Path) -> None:
    """Add the curves figure's section to a run's report.md."""
    text = report.read_text().rstrip("\n")
    section = (
        "## Training curves\n\nLoss and learning rate per optimizer step of every fine-tune "
        "(each task's model/curves.jsonl in the store):\n\n![curves](curves.png)\n"
    )
    atomic_write_text(report, text + "\n\n" + section)
