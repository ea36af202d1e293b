"""The command line: ``python -m tests.support.openai_server --model NAME=PATH --workdir DIR``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sublearn.backends.refs import ModelRef
from sublearn.errors import ConfigError, SublearnError
from tests.support.openai_server.app import LocalOpenAIApp
from tests.support.openai_server.handler import serve
from tests.support.openai_server.protocol import is_loopback

log = logging.getLogger("sublearn.local_openai_server")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.openai_server",
        description="A local OpenAI-compatible server over sublearn model backends.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve a model folder (or backend reference) under NAME; repeatable",
    )
    parser.add_argument("--workdir", type=Path, required=True, help="uploads, models, state")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file")
    parser.add_argument("--finetune-config", type=Path, help="JSON FinetuneConfig of jobs")
    parser.add_argument(
        "--api-key-env", help="variable holding the key /v1 requests must carry (if set)"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N]")
    return parser.parse_args(argv)


def _parse_models(specs: list[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for spec in specs:
        name, sep, ref = spec.partition("=")
        name, ref = name.strip(), ref.strip()
        if not sep or not name or not ref:
            raise ConfigError(f"--model {spec!r}: write NAME=PATH")
        if name in models:
            raise ConfigError(f"--model {name} is given twice")
        path = Path(ref).expanduser()
        ref = str(path.resolve()) if path.exists() else ref
        ModelRef.parse(ref).check()  # a typo fails now, not at the first request
        models[name] = ref
    return models


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 after a clean stop, 2 on a bad argument or config.
    """
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        models = _parse_models(args.model)
        cfg = None
        if args.finetune_config is not None:
            try:
                cfg = json.loads(args.finetune_config.read_text())
            except (OSError, ValueError) as err:
                raise ConfigError(f"--finetune-config {args.finetune_config}: {err}") from None
            if not isinstance(cfg, dict):
                raise ConfigError(f"--finetune-config {args.finetune_config}: expected an object")
        api_key = os.environ.get(args.api_key_env, "").strip() if args.api_key_env else ""
        if args.api_key_env and not api_key:
            log.warning("%s is not set: requests are not authenticated", args.api_key_env)
        loopback = is_loopback(args.host)
        if not loopback:
            log.warning("listening on %s, beyond this machine; /_admin is off", args.host)
        args.workdir.mkdir(parents=True, exist_ok=True)
        app = LocalOpenAIApp(
            models,
            args.workdir,
            finetune_config=cfg,
            api_key=api_key or None,
            device=args.device,
            admin=loopback,
        )
    except SublearnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    _import_libraries()
    try:
        serve(app, args.host, args.port, stop, args.port_file)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    finally:
        app.close()
    return 0


def _import_libraries() -> None:
    """Import what models and training load, before any thread does.

    transformers resolves its names lazily, and two threads resolving them at once (a
    request loading a model while a job starts training) can fail with an ImportError.
    """
    import transformers
    from trl.trainer.sft_trainer import SFTTrainer

    del SFTTrainer
    for name in ("TrainingArguments", "AutoModelForCausalLM", "AutoTokenizer"):
        getattr(transformers, name)
