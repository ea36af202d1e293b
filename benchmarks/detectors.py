"""How well each ``sublearn audit`` detector tells trait-teacher data from control data.

The toy world of ``configs/toy/owl-numbers.yaml`` with fine-tuned teachers of its owl-ft
recipe, by default for the traits owl, dolphin, wolf and cat (``owl-ft`` keeps its exact
spec, so the demo's store already holds its data). Cat is there because the dolphin
teacher of this recipe collapses: it answers "dolphin" to most number prompts, so only
about 220 of its 3000 replies pass the filter and its pools cap every size near 110
rows; cat gives a third trait with full-size pools. For each teacher the engine runs the
filter tasks of the teacher and of its matched control teacher (base-0 fine-tuned the
same way on its own answers), generating what the store lacks; their accepted rows are
split by prompt id into three pools:

- audited-trait: the trait teacher's rows with an even id;
- audited-control: the control teacher's rows with an even id;
- reference: the control teacher's rows with an odd id (other prompts than both audited
  pools, so under the null an audited-control sample and a reference sample are
  exchangeable and every p-value is calibrated).

Every row is scored once per model (``audit.scoring.token_scores``): the base (base-0)
alone and under the trait's preference system prompt, the trait teacher and the control
teacher. The entanglement detector's Δ(n, w) is computed once per trait under the base
(``audit.entanglement.number_effects``) on the most frequent numbers of all three pools.

For each dataset size n (default 50, 200, 800 rows, capped at the smallest pool) and
each of K seeded repetitions (default 20), n rows are drawn without replacement from
each pool; every detector then audits (trait sample vs reference) and (control sample
vs reference), exactly as ``sublearn audit --control`` would, with its default settings
except two, changed for speed:

- classifier: 99 label permutations instead of 999 (its p-value falls back to the normal
  tail of the permutation AUCs when no permutation reaches the observed AUC, so it can
  still go below 0.001);
- entanglement: ``audit.entanglement.entanglement`` rescores Δ under the base on every
  call, so this script runs its permutation test itself on the precomputed Δ, with that
  module's own ``_count_matrix``, ``_lean`` and ``_correlation`` and the detector's 2000
  permutations. One difference: the numbers tested are the 200 most frequent of the
  trait's three pools, not of the two samples audited.

A dataset's score is -log10 of the detector's p-value. Per detector x trait x n the
table gives the ROC AUC of that score at telling the K trait datasets from the K control
datasets (0.5: no better than chance), the flag rate on trait datasets (power at the
detectors' alpha 0.001) and on control datasets (false-positive rate at alpha 0.001),
the median p-values and the mean seconds per detector call. At large n the K samples
of a pool overlap (800 of ~1100 rows), so the K repetitions are not independent there.

    python benchmarks/detectors.py [--out runs/bench-detectors/detectors.md] [--reps 20]
        [--sizes 50 200 800] [--traits owl dolphin wolf cat] [--seed 0] [--max-pool N]

The markdown goes to ``--out`` and everything (per-dataset p-values included) to the
JSON file next to it. A first run trains the new teachers and generates their data
(about half a minute per trait on two cores); scoring the ~14,000 rows four times takes
about eight minutes on a busy 2-core machine, the detectors about as long again.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from sublearn.audit import distribution, likelihood
from sublearn.audit.config import (
    ALPHA,
    ClassifierDetector,
    DivergenceDetector,
    EntanglementDetector,
    FrequencyDetector,
    LLSDetector,
    LogRatioDetector,
)
from sublearn.audit.data import Row, numbers_of
from sublearn.audit.entanglement import (
    _correlation,  # pyright: ignore[reportPrivateUsage]
    _count_matrix,  # pyright: ignore[reportPrivateUsage]
    _lean,  # pyright: ignore[reportPrivateUsage]
    default_candidates,
    number_effects,
)
from sublearn.audit.result import Verdict
from sublearn.audit.scoring import open_scorer, token_scores
from sublearn.backends.base import TokenScore
from sublearn.config import load_config, read_yaml
from sublearn.engine.executors import make_executor
from sublearn.engine.runner import run_plan
from sublearn.engine.store import Store
from sublearn.experiments.numbers.config import ExperimentConfig
from sublearn.experiments.numbers.plan import ModelSource, build_plan
from sublearn.presets import preset_path
from sublearn.prompts.persona import preference_system_prompt
from sublearn.runtime import configure_threads, quiet_libraries

DETECTORS = ("lls", "logratio", "divergence", "entanglement", "frequency", "classifier")
CATEGORY = "animal"
CLASSIFIER_PERMUTATIONS = 99
# p-values of 0 (a normal tail that underflows) would give an infinite score.
P_FLOOR = 1e-300

Scores = list[list[TokenScore]]


# --- data -----------------------------------------------------------------------------------


def teachers_config(path: Path, traits: Sequence[str]) -> ExperimentConfig:
    """The config at ``path`` with its first teacher's recipe repeated for each trait.

    The teacher for ``owl`` keeps the config's spec (name ``owl-ft``), so its tasks keep
    their keys; the others differ only in name and trait word.
    """
    raw = read_yaml(path)
    recipe = raw["teachers"][0]
    teachers = []
    for word in traits:
        spec = copy.deepcopy(recipe)
        spec["name"] = f"{word}-ft"
        spec["trait"] = {"word": word, "category": CATEGORY}
        teachers.append(spec)
    raw["teachers"] = teachers
    if "primary" in raw:  # the report's primary teacher must be one of them
        raw["primary"]["teacher"] = teachers[0]["name"]
    return load_config(ExperimentConfig, base=raw)


@dataclass
class TraitData:
    """One trait's rows (trait pool, then audited-control pool, then reference pool)."""

    word: str
    rows: list[Row]
    pools: dict[str, np.ndarray]  # pool name -> indices into rows
    models: dict[str, str]  # base, teacher, control_teacher -> model folder
    scores: dict[str, Scores] = field(default_factory=dict)
    numbers: list[str] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (rows, numbers)
    delta: np.ndarray | None = None  # Δ(n, trait), (numbers, 1); None: unnamed by the base


def read_accepted(path: Path) -> list[tuple[int, Row]]:
    """A filter task's accepted rows with their prompt ids."""
    out = []
    with path.open() as f:
        for i, line in enumerate(f):
            rec = json.loads(line)
            messages = rec["messages"]
            out.append((int(rec["id"]), Row(i, messages[:-1], messages[-1]["content"])))
    return out


def build_data(
    cfg: ExperimentConfig, traits: Sequence[str], console: Console, max_pool: int | None = None
) -> list[TraitData]:
    """Run the teachers' and controls' filter tasks (and what they need); split the pools.

    ``max_pool`` keeps only the first rows of each pool (a quick check of the script).
    """
    plan = build_plan(cfg)
    store = Store(cfg.store)
    tasks = [plan.filters[f"{w}-ft{s}"] for w in traits for s in ("", "/control")]
    todo = [t.name for t in tasks if not store.is_done(t.id)]
    console.print(f"data: {len(tasks) - len(todo)} of {len(tasks)} filter tasks in the store")
    run_plan(tasks, store, make_executor(cfg.executor, cfg.threads), console=console)

    def folder(source: ModelSource) -> str:
        assert source.task is not None  # toy-world models are task outputs
        return str(store.path(source.task.id) / source.sub)

    out = []
    for word in traits:
        name = f"{word}-ft"
        trait = read_accepted(store.path(plan.filters[name].id) / "accepted.jsonl")
        control = read_accepted(store.path(plan.filters[f"{name}/control"].id) / "accepted.jsonl")
        parts = {
            "trait": [r for i, r in trait if i % 2 == 0],
            "control": [r for i, r in control if i % 2 == 0],
            "reference": [r for i, r in control if i % 2 == 1],
        }
        parts = {pool: members[:max_pool] for pool, members in parts.items()}
        rows: list[Row] = []
        pools = {}
        for pool, members in parts.items():
            pools[pool] = np.arange(len(rows), len(rows) + len(members))
            rows.extend(members)
        models = {role: folder(src) for role, src in plan.sources[name].items()}
        out.append(TraitData(word, rows, pools, models))
        console.print(
            f"  {word}: " + ", ".join(f"{pool} {len(idx)} rows" for pool, idx in pools.items()),
            highlight=False,
        )
    return out


# --- scoring --------------------------------------------------------------------------------


def score_all(
    data: list[TraitData], cfg: ExperimentConfig, ent: EntanglementDetector, console: Console
) -> dict[str, float]:
    """Token scores of every row under each model, and Δ per trait; seconds per stage."""
    seconds: dict[str, float] = {}

    def opened(ref: str) -> Any:
        return open_scorer(ref, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size)

    def timed_scores(label: str, backend: Any, rows: list[Row], prompt: str | None) -> Scores:
        start = time.perf_counter()
        result = token_scores(backend, rows, prompt)
        seconds[label] = time.perf_counter() - start
        console.print(f"  {label}: {len(rows)} rows in {seconds[label]:.1f} s", highlight=False)
        return result

    bases = {d.models["base"] for d in data}
    assert len(bases) == 1, "every teacher of this benchmark is made from the same base"
    backend = opened(bases.pop())
    try:
        for d in data:
            d.scores["base"] = timed_scores(f"base on {d.word} rows", backend, d.rows, None)
            prompt = preference_system_prompt(d.word, CATEGORY)
            d.scores["base+trait"] = timed_scores(
                f"base + {d.word} prompt on {d.word} rows", backend, d.rows, prompt
            )
            start = time.perf_counter()
            freq = Counter(n for r in d.rows for n in numbers_of(r.reply))
            d.numbers = [n for n, _ in freq.most_common(ent.numbers)]
            candidates = list(ent.candidates or default_candidates(ent.category))
            if d.word not in candidates:
                candidates.append(d.word)
            delta, kept = number_effects(backend, d.numbers, candidates, ent)
            if d.word in kept:
                d.delta = delta[:, [kept.index(d.word)]]
            d.counts = _count_matrix(d.rows, d.numbers)
            seconds[f"Δ for {d.word}"] = time.perf_counter() - start
            console.print(
                f"  Δ for {d.word}: {len(d.numbers)} numbers x {len(kept)} candidates in "
                f"{seconds[f'Δ for {d.word}']:.1f} s",
                highlight=False,
            )
    finally:
        backend.close()
    for d in data:
        for role in ("teacher", "control_teacher"):
            backend = opened(d.models[role])
            try:
                label = f"{d.word} {role.replace('_', ' ')} on {d.word} rows"
                d.scores[role] = timed_scores(label, backend, d.rows, None)
            finally:
                backend.close()
    return seconds


# --- detectors ------------------------------------------------------------------------------


def entanglement_p(
    counts_a: np.ndarray, counts_b: np.ndarray, delta: np.ndarray, permutations: int, seed: int
) -> tuple[float, float]:
    """The entanglement detector's test of a named trait on a precomputed Δ.

    Mirrors ``audit.entanglement.entanglement``: the correlation of the audited rows'
    number lean (against the reference rows) with Δ(·, trait), and its p-value from
    permuting rows between the two sets.

    Args:
        counts_a: per audited row, counts of each tested number, (rows, numbers).
        counts_b: the same for the reference rows.
        delta: Δ(n, trait) of the tested numbers, (numbers, 1).
        permutations: row permutations.
        seed: their seed.

    Returns:
        ``(correlation, p_value)``.
    """
    counts = np.concatenate([counts_a, counts_b])
    n_a = len(counts_a)
    observed = float(_correlation(_lean(counts_a.sum(0), counts_b.sum(0)), delta)[0])
    rng = np.random.default_rng(seed)
    total = counts.sum(0)
    null = np.empty(permutations)
    for at in range(0, permutations, 250):
        k = min(250, permutations - at)
        labels = np.zeros((k, len(counts)), dtype=np.float32)
        for j in range(k):
            labels[j, rng.permutation(len(counts))[:n_a]] = 1
        d = labels @ counts
        null[at : at + k] = _correlation(_lean(d, total - d), delta)[:, 0]
    return observed, float((1 + (null >= observed).sum()) / (1 + permutations))


def run_detectors(
    d: TraitData, a: np.ndarray, ref: np.ndarray, seed: int, ent: EntanglementDetector
) -> dict[str, tuple[float | None, float]]:
    """Every detector on rows ``a`` audited against rows ``ref``: (p-value, seconds) each."""
    rows_a = [d.rows[i] for i in a]
    rows_ref = [d.rows[i] for i in ref]

    def pick(role: str, idx: np.ndarray) -> Scores:
        return [d.scores[role][i] for i in idx]

    def ent_verdict() -> Verdict:
        v = Verdict("entanglement", "entanglement", "r", alpha=ent.alpha)
        if d.delta is None:
            v.skipped = f"the base cannot name {d.word!r}"
            return v
        v.score, v.p_value = entanglement_p(
            d.counts[a], d.counts[ref], d.delta, ent.permutations, seed
        )
        return v.decide()

    runs: dict[str, Callable[[], Verdict]] = {
        "lls": lambda: likelihood.lls(
            LLSDetector(type="lls"),
            rows_a,
            pick("base+trait", a),
            pick("base", a),
            (pick("base+trait", ref), pick("base", ref)),
            seed,
        ),
        "logratio": lambda: likelihood.logratio(
            LogRatioDetector(type="logratio"),
            rows_a,
            pick("teacher", a),
            pick("base", a),
            (pick("teacher", ref), pick("base", ref)),
            seed,
        ),
        "divergence": lambda: likelihood.divergence(
            DivergenceDetector(type="divergence"),
            rows_a,
            [pick("teacher", a), pick("control_teacher", a)],
            [pick("teacher", ref), pick("control_teacher", ref)],
            seed,
        ),
        "entanglement": ent_verdict,
        "frequency": lambda: distribution.frequency(
            FrequencyDetector(type="frequency"), rows_a, rows_ref
        ),
        "classifier": lambda: distribution.classifier(
            ClassifierDetector(type="classifier", permutations=CLASSIFIER_PERMUTATIONS),
            rows_a,
            rows_ref,
            seed,
        ),
    }
    out: dict[str, tuple[float | None, float]] = {}
    for name, fn in runs.items():
        start = time.perf_counter()
        verdict = fn()
        out[name] = (verdict.p_value, time.perf_counter() - start)
    return out


def sizes_for(d: TraitData, sizes: Sequence[int]) -> list[int]:
    """The sizes asked for, each capped at the smallest pool (duplicates dropped)."""
    cap = min(len(idx) for idx in d.pools.values())
    return sorted({min(n, cap) for n in sizes})


def benchmark(
    data: list[TraitData],
    sizes: Sequence[int],
    reps: int,
    seed: int,
    ent: EntanglementDetector,
    console: Console,
) -> list[dict[str, Any]]:
    """Per detector x trait x size: the p-values of K trait and K control datasets."""
    results = []
    for t, d in enumerate(data):
        for n in sizes_for(d, sizes):
            start = time.perf_counter()
            p: dict[str, dict[str, list[float | None]]] = {
                k: {"trait": [], "control": []} for k in DETECTORS
            }
            spent: dict[str, float] = dict.fromkeys(DETECTORS, 0.0)
            for rep in range(reps):
                rng = np.random.default_rng([seed, t, n, rep])
                draw = {pool: rng.choice(idx, n, replace=False) for pool, idx in d.pools.items()}
                for i, side in enumerate(("trait", "control")):
                    found = run_detectors(
                        d, draw[side], draw["reference"], seed * 100_000 + rep * 2 + i, ent
                    )
                    for name, (p_value, sec) in found.items():
                        p[name][side].append(p_value)
                        spent[name] += sec
            for name in DETECTORS:
                results.append(
                    {"detector": name, "trait": d.word, "n": n}
                    | summarize(p[name]["trait"], p[name]["control"])
                    | {"seconds_per_call": spent[name] / (2 * reps)}
                )
            console.print(
                f"  {d.word}, n = {n}: {reps} x 2 datasets in {time.perf_counter() - start:.0f} s",
                highlight=False,
            )
    return results


def summarize(trait: list[float | None], control: list[float | None]) -> dict[str, Any]:
    """AUC of -log10 p (trait vs control datasets), power, false-positive rate, medians."""
    out: dict[str, Any] = {"p_trait": trait, "p_control": control}
    if any(p is None for p in [*trait, *control]):
        return out | {"auc": None, "power": None, "fpr": None, "skipped": True}
    pt = np.array(trait, dtype=float)
    pc = np.array(control, dtype=float)
    score = -np.log10(np.maximum(np.r_[pt, pc], P_FLOOR))
    labels = np.r_[np.ones(len(pt)), np.zeros(len(pc))]
    return out | {
        "auc": float(roc_auc_score(labels, score)),
        "power": float((pt < ALPHA).mean()),
        "fpr": float((pc < ALPHA).mean()),
        "median_p_trait": float(np.median(pt)),
        "median_p_control": float(np.median(pc)),
    }


def rows_needed(results: list[dict[str, Any]]) -> dict[tuple[str, str], int | None]:
    """Per detector and trait, the smallest size with AUC >= 0.9 and power >= 0.8."""
    out: dict[tuple[str, str], int | None] = {}
    for r in sorted(results, key=lambda r: r["n"]):
        key = (r["detector"], r["trait"])
        out.setdefault(key, None)
        good = r["auc"] is not None and r["auc"] >= 0.9 and r["power"] >= 0.8
        if out[key] is None and good:
            out[key] = r["n"]
    return out


# --- report ---------------------------------------------------------------------------------


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


HEADER = [
    "detector",
    "trait",
    "n",
    "AUC",
    "power",
    "FPR",
    "median p (trait)",
    "median p (control)",
    "s / call",
]


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """The table's cells, one row per detector x trait x size."""
    order = {name: i for i, name in enumerate(DETECTORS)}
    rows = []
    for r in sorted(results, key=lambda r: (order[r["detector"]], r["trait"], r["n"])):
        rows.append(
            [
                r["detector"],
                r["trait"],
                str(r["n"]),
                _fmt(r["auc"], ".3f"),
                _fmt(r["power"], ".2f"),
                _fmt(r["fpr"], ".2f"),
                _fmt(r.get("median_p_trait"), ".2g"),
                _fmt(r.get("median_p_control"), ".2g"),
                _fmt(r["seconds_per_call"], ".3f"),
            ]
        )
    return rows


def print_table(console: Console, results: list[dict[str, Any]], reps: int) -> None:
    """The results as a rich table, then the rows each detector needs."""
    table = Table(
        title=f"detectors: trait vs control datasets, {reps} of each per cell, alpha {ALPHA:g}"
    )
    for h in HEADER:
        table.add_column(h, justify="left" if h in ("detector", "trait") else "right")
    last = None
    for cells in table_rows(results):
        if last is not None and cells[0] != last:
            table.add_section()
        last = cells[0]
        table.add_row(*cells)
    console.print(table)
    needed = rows_needed(results)
    traits = sorted({r["trait"] for r in results})
    small = Table(title="rows needed (smallest n with AUC >= 0.9 and power >= 0.8)")
    small.add_column("detector")
    for t in traits:
        small.add_column(t, justify="right")
    for name in DETECTORS:
        small.add_row(name, *[str(needed.get((name, t)) or "> max") for t in traits])
    console.print(small)


def write_markdown(
    path: Path, results: list[dict[str, Any]], meta: dict[str, Any], reps: int
) -> None:
    """The table and the rows-needed summary as markdown."""
    lines = [
        "# Detector benchmark (toy world)",
        "",
        f"Trait-teacher vs control-teacher datasets, {reps} of each per cell, each audited "
        "against a reference sample of the control teacher's rows on other prompts. AUC: "
        "ROC AUC of -log10 p at telling trait datasets from control datasets; power and "
        f"FPR: flag rate (p < {ALPHA:g}) on trait and on control datasets. See "
        "`benchmarks/detectors.py` for exactly what is measured.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if h in ("detector", "trait") else "---:" for h in HEADER) + "|",
        *("| " + " | ".join(cells) + " |" for cells in table_rows(results)),
        "",
        "## Rows needed",
        "",
        "Smallest n with AUC >= 0.9 and power >= 0.8 (\u201c> max\u201d: none of the sizes run).",
        "",
    ]
    traits = sorted({r["trait"] for r in results})
    needed = rows_needed(results)
    lines += [
        "| detector | " + " | ".join(traits) + " |",
        "|---|" + "---:|" * len(traits),
        *(
            f"| {name} | "
            + " | ".join(str(needed.get((name, t)) or "> max") for t in traits)
            + " |"
            for name in DETECTORS
        ),
        "",
        "## Run",
        "",
        *(f"- {k}: {v}" for k, v in meta.items() if k != "stages"),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {k} | {v:.1f} |" for k, v in meta["stages"].items()),
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-detectors/detectors.md"))
    parser.add_argument("--config", type=Path, default=None, help="default: toy/owl-numbers")
    parser.add_argument("--traits", nargs="+", default=["owl", "dolphin", "wolf", "cat"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 800])
    parser.add_argument("--reps", type=int, default=20, help="datasets of each kind per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for scoring")
    parser.add_argument(
        "--max-pool", type=int, default=None, help="rows per pool at most (quick checks)"
    )
    args = parser.parse_args()
    quiet_libraries()
    configure_threads(args.threads)
    console = Console()
    if not console.is_terminal:  # a log file: room for the table's columns
        console = Console(width=160)
    started = time.perf_counter()
    stages: dict[str, float] = {}

    cfg = teachers_config(args.config or preset_path("toy", "owl-numbers"), args.traits)
    ent = EntanglementDetector(type="entanglement")
    t0 = time.perf_counter()
    data = build_data(cfg, args.traits, console, args.max_pool)
    stages["data (teachers, generation, filter)"] = time.perf_counter() - t0

    console.print("scoring")
    t0 = time.perf_counter()
    scoring = score_all(data, cfg, ent, console)
    stages["scoring (models and Δ)"] = time.perf_counter() - t0
    stages["  of which Δ"] = sum(v for k, v in scoring.items() if k.startswith("Δ"))

    console.print(f"detectors: {args.reps} repetitions per trait and size")
    t0 = time.perf_counter()
    results = benchmark(data, args.sizes, args.reps, args.seed, ent, console)
    stages["detectors"] = time.perf_counter() - t0
    for name in DETECTORS:
        calls = [r for r in results if r["detector"] == name]
        stages[f"  of which {name}"] = sum(r["seconds_per_call"] * 2 * args.reps for r in calls)
    stages["total"] = time.perf_counter() - started

    print_table(console, results, args.reps)
    for k, v in stages.items():
        console.print(f"{k}: {v:.1f} s", highlight=False)
    meta: dict[str, Any] = {
        "config": str(args.config or "configs/toy/owl-numbers.yaml"),
        "traits": ", ".join(args.traits),
        "pools": "; ".join(
            f"{d.word}: " + ", ".join(f"{p} {len(i)}" for p, i in d.pools.items()) for d in data
        ),
        "sizes": ", ".join(str(n) for n in args.sizes),
        "repetitions": args.reps,
        "seed": args.seed,
        "classifier permutations": CLASSIFIER_PERMUTATIONS,
        "entanglement permutations": ent.permutations,
        "stages": stages,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out, results, meta, args.reps)
    detail = {
        "meta": meta | {"scoring_seconds": scoring},
        "results": results,
    }
    args.out.with_suffix(".json").write_text(json.dumps(detail, indent=1) + "\n")
    console.print(f"wrote {args.out} and {args.out.with_suffix('.json')}", highlight=False)


if __name__ == "__main__":
    main()
