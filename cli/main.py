"""The `vlkd` command. Heavy libraries (torch, ray, boto3, transformers) load only inside the commands that
need them, so `vlkd --help` answers at once."""

from __future__ import annotations

import sys

import typer

from vlkd import __version__, storage
from vlkd.cli import artifacts, data, jobs, pipeline, quickstart, report, specs
from vlkd.cli.output import print_error
from vlkd.errors import VlkdError, error_lines, first_line

app = typer.Typer(
    name="vlkd",
    help="VidLanKD as batch jobs: video features -> teacher -> distilled students -> eval, on Ray or Kubernetes.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts hold `[default: ...]`, which rich would take for markup and drop
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(specs.validate)
app.command()(specs.schema)
app.command()(jobs.submit)
app.command()(jobs.render)
app.command()(jobs.status)
app.command()(jobs.logs)
app.command()(jobs.cancel)
app.command("list")(jobs.list_jobs)
app.command()(quickstart.quickstart)
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(data.app, name="data")
app.add_typer(report.app, name="report")
app.add_typer(pipeline.app, name="pipeline")


_verbose = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vlkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="print the traceback of an unexpected error"),
) -> None:
    """VidLanKD as batch jobs on Ray and Kubernetes."""
    global _verbose
    _verbose = verbose


def main() -> None:
    """Run the CLI; user errors print one line (no traceback) and exit non-zero."""
    with storage.interactive():
        try:
            code = app(standalone_mode=False)
        except typer.TyperException as exc:  # a usage error: which option or argument, and what is wrong with it
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            print_error("aborted")
            sys.exit(130)
        except VlkdError as exc:
            for line in error_lines(exc):
                print_error(line)
            sys.exit(exc.exit_code)
        except Exception as exc:  # a library's error (a backend's client, a network): one line unless asked for more
            if _verbose:
                raise
            print_error(f"{type(exc).__name__}: {first_line(exc)} (run `vlkd -v ...` for the traceback)")
            sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
