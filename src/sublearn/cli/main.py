"""Entry point: ``sublearn COMMAND``. Each command lives in its own module."""

from __future__ import annotations

import typer

from sublearn.cli import audit, defend, engine, lm, mnist, store, theory, toy
from sublearn.cli.export import export as export_command
from sublearn.cli.view import view as view_command
from sublearn.version import __version__

app = typer.Typer(
    name="sublearn",
    help="Reproduce, measure, audit and defend against subliminal learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("mnist")(mnist.mnist)
app.command("theory")(theory.theory)
app.command("demo")(engine.demo)
app.command("run")(engine.run)
app.command("plan")(engine.plan)
app.command("sweep")(engine.sweep)
app.command("generate")(lm.generate)
app.command("filter")(lm.filter_)
app.command("finetune")(lm.finetune)
app.command("evaluate")(lm.evaluate)
app.command("report")(engine.report)
app.command("audit")(audit.audit)
app.command("defend")(defend.defend)
app.command("view")(view_command)
app.command("export")(export_command)
app.add_typer(toy.app, name="toy", help="Build and inspect the embedded toy world of tiny LMs.")
app.add_typer(store.app, name="store", help="Verify a task store; collect its garbage.")


@app.command("version")
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


if __name__ == "__main__":
    app()
