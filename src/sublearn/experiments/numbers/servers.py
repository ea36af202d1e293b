"""Plan-time checks of the servers behind an experiment's ``openai:`` models.

Before any task runs: the server answers, it serves each model name (a did-you-mean over
the names it lists, since some servers, llama.cpp's among them, answer any name with
the model they have), and it can do what the evaluations need: log-probabilities for
exact mode, ``n`` replies per request for sampled mode (without, every sample is its own
request; the backend falls back by itself). ``plan`` asks only the free ``GET /models``
and reports problems as warnings; ``run`` also sends one 1-token request per needed
capability and refuses a plan that cannot work. Answers are cached for the process
(:mod:`sublearn.backends.probe`).
"""

from __future__ import annotations

from sublearn.backends.probe import honours_n, returns_logprobs, served_models, unknown_model
from sublearn.backends.refs import ModelRef
from sublearn.errors import ConfigError, PlanError, ProviderError
from sublearn.experiments.numbers.config import ExperimentConfig


def remote_models(cfg: ExperimentConfig) -> dict[str, ModelRef]:
    """The config's models served by an ``openai:`` server, by config key."""
    refs = {k: ModelRef.parse(v) for k, v in cfg.models.items() if not v.startswith("toy:")}
    return {k: r for k, r in refs.items() if r.provider == "openai"}


def check_servers(cfg: ExperimentConfig, *, strict: bool) -> list[str]:
    """Ask the servers of the config's API models what the plan needs of them.

    Args:
        cfg: the experiment.
        strict: ``run``: send the capability probes, and raise on any problem. Otherwise
            (``plan``): only list the served models, and return problems as warnings.

    Returns:
        Warnings and notes to show (e.g. a server that ignores ``n``).

    Raises:
        ProviderError: (strict) a server does not answer.
        PlanError: (strict) a model name the server does not serve, or an evaluation
            that needs what the server cannot do.
        ConfigError: (strict) the server refuses the key.
    """
    remote = remote_models(cfg)
    if not remote:
        return []
    settings = cfg.providers.openai
    where = settings.base_url or "the OpenAI API"
    try:
        settings.api_key()
    except ConfigError:
        if strict:
            raise
        return [f"{settings.api_key_env} is not set: the server at {where} was not checked"]
    try:
        served = served_models(settings, next(iter(remote.values())).name)
    except (ProviderError, ConfigError) as err:
        if strict:
            raise
        return [f"{err} (`sublearn run` stops here)"]
    problems = []
    if served is not None:
        for key, ref in remote.items():
            why = unknown_model(ref.name, served, where)
            if why:
                problems.append(f"models.{key}: {why}")
    notes: list[str] = []
    if strict and not problems:
        problems, notes = _capabilities(cfg, remote)
    if problems and strict:
        if len(problems) == 1:
            raise PlanError(f"the plan cannot run: {problems[0]}")
        raise PlanError("the plan cannot run:\n  - " + "\n  - ".join(problems))
    return [*problems, *notes]


def _capabilities(cfg: ExperimentConfig, remote: dict[str, ModelRef]) -> tuple[list, list]:
    """Problems (exact mode without log-probabilities) and notes (``n`` ignored)."""
    settings = cfg.providers.openai
    where = settings.base_url or "the OpenAI API"
    exact = [n for n, e in cfg.evaluations.items() if getattr(e, "mode", None) == "exact"]
    sampled = [
        n
        for n, e in cfg.evaluations.items()
        if getattr(e, "mode", None) == "sample" and getattr(e, "samples_per_question", 1) > 1
    ]
    problems, notes = [], []
    for ref in dict.fromkeys(remote.values()):
        if exact and not returns_logprobs(settings, ref.name):
            problems += [
                f"evaluations.{name}: exact mode reads the reply's log-probabilities, which "
                f"{ref} at {where} does not return; use mode: sample (the share of sampled "
                "replies) for this model"
                for name in exact
            ]
        if sampled and settings.samples_per_request > 1 and not honours_n(settings, ref.name):
            notes.append(
                f"{ref} at {where} returns one reply whatever n asks for: the samples of "
                f"{', '.join(f'evaluations.{n}' for n in sampled)} go out one request each "
                "(providers.openai.samples_per_request: 1 says so in the config)"
            )
    return problems, notes
