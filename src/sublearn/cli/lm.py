"""Commands that run one stage of the language-model pipeline on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import Field

from sublearn.cli.options import (
    ConfigOption,
    SetOption,
    UserError,
    console,
    user_errors,
)
from sublearn.config import Config, load_config, read_yaml
from sublearn.evaluation.config import EvalConfig
from sublearn.filters.stage import FilterConfig
from sublearn.finetune.config import FinetuneConfig
from sublearn.generation.config import GenerationConfig
from sublearn.presets import preset_path
from sublearn.prompts.numbers import NumberPromptConfig
from sublearn.runs import atomic_write_json


def _setup(threads: int | None) -> None:
    from sublearn.runtime import configure_threads, quiet_libraries

    quiet_libraries()
    configure_threads(threads)


class GenerateConfig(Config):
    """``sublearn generate``: one teacher answers number prompts."""

    model: str = Field(description="Teacher model folder or hub id.")
    trait: str | None = Field(
        default=None, description="Give the teacher the preference system prompt."
    )
    category: str = Field(default="animal", description="Category of the trait (animal, tree).")
    device: str = Field(default="auto", description="auto, cpu or cuda[:N].")
    dtype: str = Field(default="auto", description="Weights dtype.")
    threads: int | None = Field(default=None, gt=0, description="torch CPU threads.")
    prompts: NumberPromptConfig = Field(
        default_factory=NumberPromptConfig, description="Prompt generator."
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Sampling settings."
    )


def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    model: Annotated[str | None, typer.Option(help="Teacher model folder or hub id.")] = None,
    trait: Annotated[str | None, typer.Option(help="Preference to prompt, e.g. owl.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate number-sequence data from a (prompted) teacher; resumes if interrupted."""
    from sublearn.backends.hf import HFBackend
    from sublearn.generation.stage import generate_dataset
    from sublearn.prompts.numbers import generate_number_prompts
    from sublearn.prompts.persona import preference_system_prompt

    with user_errors():
        flags = [f"model={model}"] if model else []
        flags += [f"trait={trait}"] if trait else []
        cfg = load_config(GenerateConfig, config, [*flags, *(set_ or [])])
        _setup(cfg.threads)
        backend = HFBackend(
            cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.generation.batch_size
        )
        prompts = generate_number_prompts(cfg.prompts)
        system = preference_system_prompt(cfg.trait, cfg.category) if cfg.trait else None
        from rich.progress import Progress

        with Progress(console=console) as progress:
            task = progress.add_task("generate", total=len(prompts))
            generate_dataset(
                backend,
                prompts,
                out,
                cfg.generation,
                system_prompt=system,
                source=cfg.model,
                on_progress=lambda n: progress.advance(task, n),
            )
        console.print(f"wrote {out}")


def filter_(
    source: Annotated[Path, typer.Argument(help="Raw JSONL dataset.")],
    out: Annotated[Path, typer.Argument(help="Filtered JSONL to write.")],
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Filter a number dataset (format, banned numbers, trait leakage) and subsample it."""
    from sublearn.filters.stage import filter_dataset

    with user_errors():
        cfg = load_config(FilterConfig, config, set_ or [])
        if not source.is_file():
            raise UserError(f"dataset not found: {source}")
        report = filter_dataset(source, out, cfg)
        console.print_json(report.model_dump_json())


def finetune(
    base: Annotated[str, typer.Option(help="Student base model folder or hub id.")],
    data: Annotated[Path, typer.Option(help="Chat JSONL to train on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    teacher: Annotated[str | None, typer.Option(help="Teacher model (kl objective).")] = None,
    teacher_trait: Annotated[
        str | None, typer.Option(help="Prompted teacher: its preference (kl objective).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Fine-tune preset from configs/finetune (e.g. paper-lora).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Fine-tune a student (SFT or soft-label KL) on a chat dataset."""
    from sublearn.finetune.stage import finetune as run_finetune
    from sublearn.prompts.persona import preference_system_prompt

    with user_errors():
        base_data = read_yaml(preset_path("finetune", preset)) if preset else None
        cfg = load_config(FinetuneConfig, config, set_ or [], base=base_data)
        if not data.is_file():
            raise UserError(f"dataset not found: {data}")
        _setup(None)
        system = preference_system_prompt(teacher_trait, "animal") if teacher_trait else None
        run_finetune(base, data, cfg, out, teacher_model=teacher, teacher_system_prompt=system)
        console.print(f"wrote {out}")


def evaluate(
    model: Annotated[str, typer.Option(help="Model folder or hub id.")],
    target: Annotated[list[str], typer.Option(help="Target word(s) to score, e.g. owl.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="metrics JSON to write.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Ask the favorite-animal (or tree) questions and report the rate of each target."""
    from sublearn.backends.hf import HFBackend
    from sublearn.evaluation.preference import evaluate_preference

    with user_errors():
        cfg = load_config(EvalConfig, config, set_ or [])
        _setup(None)
        backend = HFBackend(model, batch_size=cfg.batch_size)
        metrics = evaluate_preference(backend, target, cfg)
        for word, result in metrics.items():
            console.print(f"{word}: {100 * float(result['rate']):.2f}%")  # type: ignore[arg-type]
        if out:
            atomic_write_json(out, {"model": model, "config": cfg.model_dump(), "results": metrics})
