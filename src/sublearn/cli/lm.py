"""Commands that run one stage of the language-model pipeline on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import Field

from sublearn.backends.base import Backend
from sublearn.backends.providers import ProvidersConfig
from sublearn.cli.options import (
    ConfigOption,
    SetOption,
    UserError,
    console,
    user_errors,
)
from sublearn.cli.outputs import prepare_output
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


MODEL_REFS = (
    "a folder, a hub id, provider:name (hf:, openai:, vllm:, mock:) or toy:[WORLD/]I (base I "
    "of the world `sublearn toy build` wrote, in WORLD or .cache/toy-world)"
)


class GenerateConfig(Config):
    """``sublearn generate``: one teacher answers number prompts."""

    model: str = Field(description=f"Teacher model: {MODEL_REFS}.")
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
    providers: ProvidersConfig = Field(
        default_factory=ProvidersConfig, description="Settings of openai: and vllm: models."
    )


class EvaluateConfig(EvalConfig):
    """``sublearn evaluate``: the preference evaluation of one model."""

    device: str = Field(default="auto", description="auto, cpu or cuda[:N].")
    dtype: str = Field(default="auto", description="Weights dtype.")
    providers: ProvidersConfig = Field(
        default_factory=ProvidersConfig, description="Settings of openai: and vllm: models."
    )


def open_model(
    text: str,
    providers: ProvidersConfig,
    *,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 64,
    request_log: Path | None = None,
) -> Backend:
    """Open any model reference the engine takes, with the command's provider settings.

    An ``openai:`` model is checked first: the server must answer and serve its name.

    Raises:
        ModelError, ConfigError, ProviderError: naming the reference and what to fix.
    """
    from sublearn.backends.probe import served_models, unknown_model
    from sublearn.backends.providers import backend_options
    from sublearn.backends.refs import ModelRef
    from sublearn.backends.registry import open_backend
    from sublearn.errors import ModelError

    ref = ModelRef.parse(_toy_base(text))
    if ref.provider == "openai":
        settings = providers.openai
        served = served_models(settings, ref.name)
        why = (
            unknown_model(ref.name, served, settings.base_url or "the OpenAI API")
            if served
            else None
        )
        if why:
            raise ModelError(f"{text}: {why}")
    if ref.provider == "hf" and ref.adapter is None:
        from sublearn.backends.hf import HFBackend

        # As before: the backend's own messages for folders and hub ids (e.g. offline).
        return HFBackend(ref.name, device=device, dtype=dtype, batch_size=batch_size)
    options = backend_options(
        ref, providers, device=device, dtype=dtype, batch_size=batch_size, request_log=request_log
    )
    return open_backend(ref, **options)


def _toy_base(text: str) -> str:
    """The folder of a ``toy:[WORLD/]I`` reference; any other reference unchanged."""
    from sublearn.errors import ModelError

    if not text.startswith("toy:"):
        return text
    world, _, index = text[4:].rpartition("/")
    folder = Path(world or ".cache/toy-world")
    if not index.isdigit():
        raise ModelError(
            f"{text!r}: write a toy base as toy:I or toy:WORLD_FOLDER/I (I = 0, 1, ...)"
        )
    base = folder / f"base-{index}"
    if not (base / "config.json").is_file():
        raise ModelError(
            f"{text!r}: no toy base {base}; build the world first "
            f"(sublearn toy build --out {folder})"
        )
    return str(base)


def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    model: Annotated[
        str | None, typer.Option(help="Teacher model (folder, hub id, openai:NAME, ...).")
    ] = None,
    trait: Annotated[str | None, typer.Option(help="Preference to prompt, e.g. owl.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Generate number-sequence data from a (prompted) teacher; resumes if interrupted."""
    from sublearn.generation.stage import generate_dataset
    from sublearn.prompts.numbers import generate_number_prompts
    from sublearn.prompts.persona import preference_system_prompt

    with user_errors():
        flags = [f"model={model}"] if model else []
        flags += [f"trait={trait}"] if trait else []
        cfg = load_config(GenerateConfig, config, [*flags, *(set_ or [])])
        prepare_output(out, "file")
        if cfg.trait:
            from sublearn.evaluation.spelling import require_spellable

            require_spellable(cfg.trait, [_toy_base(cfg.model)], "--trait")
        _setup(cfg.threads)
        backend = open_model(
            cfg.model,
            cfg.providers,
            device=cfg.device,
            dtype=cfg.dtype,
            batch_size=cfg.generation.batch_size,
            request_log=out.with_name(out.name + ".requests.jsonl"),
        )
        prompts = generate_number_prompts(cfg.prompts)
        system = preference_system_prompt(cfg.trait, cfg.category) if cfg.trait else None
        from rich.progress import Progress

        with backend, Progress(console=console) as progress:
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
        if not source.read_bytes().strip():
            raise UserError(f"{source}: the dataset is empty, there is nothing to filter")
        prepare_output(out, "file", "OUT")
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
        prepare_output(out, "folder")
        _setup(None)
        system = preference_system_prompt(teacher_trait, "animal") if teacher_trait else None
        run_finetune(base, data, cfg, out, teacher_model=teacher, teacher_system_prompt=system)
        console.print(f"wrote {out}")


def evaluate(
    model: Annotated[str, typer.Option(help="Model (folder, hub id, openai:NAME, ...).")],
    target: Annotated[list[str], typer.Option(help="Target word(s) to score, e.g. owl.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="metrics JSON to write.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Ask the favorite-animal (or tree) questions and report the rate of each target."""
    from sublearn.evaluation.preference import evaluate_preference

    with user_errors():
        cfg = load_config(EvaluateConfig, config, set_ or [])
        if out is not None:
            prepare_output(out, "file")
        _setup(None)
        log = out.with_name(out.name + ".requests.jsonl") if out else None
        with open_model(
            model,
            cfg.providers,
            device=cfg.device,
            dtype=cfg.dtype,
            batch_size=cfg.batch_size,
            request_log=log,
        ) as backend:
            metrics = evaluate_preference(backend, target, _eval_fields(cfg))
        for word, result in metrics.items():
            pct = {k: 100 * float(v) for k, v in result.items() if isinstance(v, int | float)}
            rate = pct["rate"]  # two decimals, but a small non-zero rate never reads 0.00%
            line = f"{word}: {rate:.2f}%" if rate >= 0.01 or rate == 0 else f"{word}: {rate:.2g}%"
            if "coverage" in pct:
                # The rate is only readable beside how much of the answer it reads.
                line += (
                    f"  (coverage {pct['coverage']:.3g}% of the answer on the {cfg.category} "
                    f"answers; within them {pct.get('renormalized', float('nan')):.3g}%)"
                )
            console.print(line, highlight=False)
            if result.get("warning"):
                console.print(f"[yellow]warning:[/] {result['warning']}", highlight=False)
        if out:
            atomic_write_json(out, {"model": model, "config": cfg.model_dump(), "results": metrics})


def _eval_fields(cfg: EvaluateConfig) -> EvalConfig:
    """The evaluation's own settings, without the command's model-opening ones."""
    return EvalConfig(**cfg.model_dump(include=set(EvalConfig.model_fields)))
