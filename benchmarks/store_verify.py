"""What the store's verification costs on the demo: ``store.verify`` none, sizes, hashes.

For each level the demo's experiment (``sublearn demo``'s config,
``configs/toy/owl-numbers.yaml``, on its own process executor) runs twice, each time as
``sublearn run`` in a fresh interpreter:

- **fresh**: from an empty store. Every task writes its outputs and its done-marker,
  which lists the size and SHA-256 of every file, whatever the level (that hashing is
  the write-time cost, and the same for all three levels); the level decides how much
  of each finished input is checked before a later task reads it.
- **rerun**: the same config on the finished store: every task is found and reused, so
  the run is the checks of every finished task plus the report.

Then the checks alone, without the run around them: every finished task of the fresh
store checked at each level with a new ``Store`` (nothing cached), and the hashing a
done-marker does at write time (``file_manifest``) over every task folder.

    python benchmarks/store_verify.py [--quick] [--repeats 1] [--work DIR] [--out FILE]
        [--set KEY=VALUE ...]

``--quick`` shrinks the demo to a seconds-long world and data (a smoke test of this
script, not a measurement). ``--repeats N`` runs every level N times, rotating the order
of the levels between repeats, and reports the median of each. The table is printed and
written as markdown to ``--out`` (default ``runs/bench-store-verify/store_verify.md``),
everything to the JSON file next to it. The full demo takes minutes per fresh run on two
cores: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LEVELS = ("none", "sizes", "hashes")

QUICK = [
    "toy_worlds.main.corpus.n_documents=600",
    "toy_worlds.main.pretrain.steps=40",
    "toy_worlds.main.workers=1",
    "data.prompts.n_prompts=120",
    "data.generation.chunk_size=16",
    "data.generation.batch_size=16",
    "data.rows=40",
    "data.min_rows=2",
    "students.seeds=[0, 1]",
    "students.objectives.sft.max_steps=6",
    "students.objectives.sft.batch_size=4",
    "students.objectives.kl_numbers.max_steps=6",
    "students.objectives.kl_numbers.batch_size=4",
    "evaluations.favorite.n_questions=5",
]
"""The demo shrunk to seconds (the tests' micro experiment): mechanics, not timings."""


def demo_config() -> Path:
    """The config ``sublearn demo`` runs."""
    from sublearn.cli.engine import DEMO_CONFIG
    from sublearn.presets import preset_path

    return preset_path(*DEMO_CONFIG)


def timed_run(config: Path, store: Path, level: str, out: Path, sets: list[str]) -> float:
    """Wall seconds of one ``sublearn run`` in a new interpreter; raises if it fails."""
    overrides = [f"store.path={store}", f"store.verify={level}", *sets]
    command = [sys.executable, "-m", "sublearn.cli.main", "run", str(config), "--out", str(out)]
    command += [x for o in overrides for x in ("--set", o)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sublearn run failed ({level}, {out}):\n{done.stdout[-3000:]}")
    return seconds


def require_all_reused(run: Path) -> None:
    """Stop if a rerun did any work: it would not measure the checks of reused tasks."""
    tasks = json.loads((run / "manifest.json").read_text())["tasks"]
    ran = [t["name"] for t in tasks if not t["cached"]]
    if ran:
        raise SystemExit(f"the rerun in {run} ran {len(ran)} tasks again: {ran[:5]}")


def finished_tasks(store: Path) -> list[str]:
    """``kind/key`` of every finished task in a store."""
    return sorted(f"{m.parent.parent.name}/{m.parent.name}" for m in store.glob("*/*/done.json"))


def check_seconds(store: Path, level: str) -> float:
    """Seconds to check every finished task at ``level``, with a new (uncached) Store."""
    from sublearn.engine.store import Store

    checker = Store(store, verify=level)  # type: ignore[arg-type]
    started = time.perf_counter()
    problems = [t for t in finished_tasks(store) if checker.problem(t) is not None]
    seconds = time.perf_counter() - started
    if problems:
        raise SystemExit(f"corrupt entries in a fresh store: {problems}")
    return seconds


def hash_seconds(store: Path) -> float:
    """Seconds to list the size and SHA-256 of every task's files, as a commit does."""
    from sublearn.engine.store import file_manifest

    started = time.perf_counter()
    for task in finished_tasks(store):
        file_manifest(store / task)
    return time.perf_counter() - started


def store_bytes(store: Path) -> int:
    """Bytes in the finished task folders (what a ``hashes`` check reads)."""
    return sum(p.stat().st_size for t in finished_tasks(store) for p in (store / t).rglob("*"))


def measure(config: Path, work: Path, sets: list[str], repeats: int) -> dict[str, Any]:
    """Every level's fresh and rerun wall times (``repeats`` each), and the checks alone."""
    times: dict[str, dict[str, list[float]]] = {lv: {"fresh": [], "rerun": []} for lv in LEVELS}
    for rep in range(repeats):
        order = LEVELS[rep % len(LEVELS) :] + LEVELS[: rep % len(LEVELS)]
        for level in order:
            root = work / f"{level}-{rep}"
            shutil.rmtree(root, ignore_errors=True)
            store = root / "store"
            for phase in ("fresh", "rerun"):
                seconds = timed_run(config, store, level, root / phase, sets)
                times[level][phase].append(seconds)
                if phase == "rerun":
                    require_all_reused(root / phase)
                print(f"  {level:6} {phase:5} (repeat {rep + 1}): {seconds:8.1f} s", flush=True)
    store = work / f"none-{repeats - 1}" / "store"
    return {
        "times": times,
        "tasks": len(finished_tasks(store)),
        "bytes": store_bytes(store),
        "check_seconds": {level: check_seconds(store, level) for level in LEVELS},
        "write_hash_seconds": hash_seconds(store),
    }


def table(result: dict[str, Any]) -> str:
    """The markdown table: medians, and ratios against ``none``."""
    med = {
        lv: {ph: statistics.median(v) for ph, v in phases.items()}
        for lv, phases in result["times"].items()
    }
    lines = [
        "| store.verify | fresh run (s) | vs none | rerun, all reused (s) | vs none "
        "| checks alone (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for level in LEVELS:
        fresh, rerun = med[level]["fresh"], med[level]["rerun"]
        lines.append(
            f"| {level} | {fresh:.1f} | {fresh / med['none']['fresh']:.3f} | {rerun:.1f} "
            f"| {rerun / med['none']['rerun']:.3f} "
            f"| {1000 * result['check_seconds'][level]:.1f} |"
        )
    lines += [
        "",
        f"{result['tasks']} tasks, {result['bytes'] / 2**20:.1f} MiB in the store; hashing "
        f"every task's files as its done-marker is written took "
        f"{1000 * result['write_hash_seconds']:.0f} ms in all (paid at every level). "
        f"Medians of {len(result['times']['none']['fresh'])} run(s) per cell; "
        f"load average before: {result['load_before']}, after: {result['load_after']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and write the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long demo (smoke test)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per level (median)")
    parser.add_argument("--work", type=Path, help="where the stores go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-store-verify/store_verify.md"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-store-verify-"))
    sets = [*(QUICK if args.quick else []), *args.sets]
    config = demo_config()
    print(f"demo config {config}{' (quick)' if args.quick else ''}; stores in {work}", flush=True)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        result = measure(config, work, sets, args.repeats)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result.update(
        quick=args.quick,
        sets=sets,
        load_before=load_before,
        load_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    text = table(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Store verification overhead on the demo\n\n{text}\n")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
