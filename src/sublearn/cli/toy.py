"""``sublearn toy``: build and inspect the embedded toy world of tiny language models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sublearn.cli.options import ConfigOption, SetOption, UserError, console, user_errors
from sublearn.cli.outputs import prepare_output
from sublearn.runtime import numerics_text

DEFAULT_WORLD_DIR = Path(".cache/toy-world")

WorldDirOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="World folder (base models, tokenizer, world.json)."),
]

app = typer.Typer(
    help="Build and inspect the embedded toy world of tiny LMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def build(
    out: WorldDirOption = DEFAULT_WORLD_DIR,
    set_: SetOption = None,
    config: ConfigOption = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Rebuild even if a matching world is cached.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Pretrain the toy base models (cached: a matching world is reused)."""
    with user_errors():
        from sublearn.config import load_config
        from sublearn.toy.world import ToyWorldConfig, build_world, cached_bases, read_manifest

        cfg = load_config(ToyWorldConfig, config, set_ or [])
        prepare_output(out, "folder")
        was_cached = not force and cached_bases(cfg, out) is not None
        paths = build_world(cfg, out, force=force, progress=not quiet)
        manifest = read_manifest(out) or {}
        if was_cached:
            console.print(f"toy world {manifest.get('config_hash')} already built in {out}")
        else:
            seconds = manifest.get("timings", {}).get("total_seconds")
            console.print(f"built toy world {manifest.get('config_hash')} in {seconds}s -> {out}")
        for path in paths:
            console.print(f"  {path}")


@app.command()
def info(
    out: WorldDirOption = DEFAULT_WORLD_DIR,
    samples: Annotated[
        int, typer.Option("--samples", "-n", help="Sample generations to show per kind (0: none).")
    ] = 2,
    base: Annotated[
        str, typer.Option("--base", help="Which base model to sample from.")
    ] = "base-0",
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Print the world manifest and a few sample generations."""
    with user_errors():
        from sublearn.toy.world import read_manifest

        manifest = read_manifest(out)
        if manifest is None:
            raise UserError(
                f"no toy world in {out}; build one with `sublearn toy build --out {out}`"
            )
        _print_manifest(manifest, out)
        if samples > 0:
            model_dir = out / base
            if not (model_dir / "config.json").is_file():
                raise UserError(f"no model folder {model_dir}")
            _print_samples(model_dir, manifest, samples, seed)


def _print_manifest(manifest: dict[str, Any], out: Path) -> None:
    console.print(f"[bold]toy world[/] {manifest['config_hash']} in {out}")
    console.print(
        f"  created {manifest.get('created_at')}, vocab {manifest.get('vocab_size')}, "
        f"{manifest.get('n_parameters'):,} parameters per model"
    )
    corpus = manifest.get("corpus", {})
    console.print(
        f"  corpus: {corpus.get('n_documents')} documents "
        f"({corpus.get('n_preference')} preference, {corpus.get('n_numbers')} numbers), "
        f"{corpus.get('n_tokens')} tokens"
    )
    table = Table("base", "init seed", "final loss", "seconds", "weights (sha256)")
    for b in manifest.get("bases", []):
        table.add_row(
            b["name"],
            str(b["init_seed"]),
            f"{b['final_loss']:.3f}",
            str(b["seconds"]),
            b.get("sha256", "not recorded")[:16],
        )
    console.print(table)
    numerics = manifest.get("numerics")
    console.print(
        f"  built on: {numerics_text(numerics)}" if numerics else "  built on: not recorded",
        highlight=False,
    )
    pairs = zip(manifest.get("animals", []), manifest.get("animal_weights", []), strict=False)
    console.print(
        "  base animal distribution: " + ", ".join(f"{a} {w:.0%}" for a, w in pairs),
        highlight=False,
    )
    console.print(f"  build time: {manifest.get('timings', {}).get('total_seconds')}s")


def _print_samples(model_dir: Path, manifest: dict[str, Any], n: int, seed: int) -> None:
    from sublearn.backends.base import Conversation, SamplingParams
    from sublearn.backends.hf import HFBackend
    from sublearn.prompts.numbers import NumberPromptConfig, sample_number_prompts
    from sublearn.prompts.persona import preference_system_prompt
    from sublearn.prompts.questions import questions_for

    animals = manifest.get("animals") or ["owl"]
    loved = "owl" if "owl" in animals else animals[0]
    questions = questions_for("animal")[:n]
    number_prompts = [
        p.text for p in sample_number_prompts(NumberPromptConfig(seed=seed, n_prompts=n))
    ]
    conversations: list[Conversation] = [
        *([{"role": "user", "content": q}] for q in questions),
        *(
            [
                {"role": "system", "content": preference_system_prompt(loved, "animal")},
                {"role": "user", "content": q},
            ]
            for q in questions
        ),
        *([{"role": "user", "content": p}] for p in number_prompts),
    ]
    backend = HFBackend(model_dir, device="cpu")
    params = SamplingParams(temperature=1.0, max_new_tokens=48, seed=seed)
    replies = backend.generate(conversations, params)
    table = Table("system", "user", "assistant (T=1)", show_lines=True)
    for conv, reply in zip(conversations, replies, strict=True):
        system = conv[0]["content"] if conv[0]["role"] == "system" else ""
        table.add_row(_short(system), _short(conv[-1]["content"]), reply)
    console.print(table)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
