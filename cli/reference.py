"""The README's CLI reference, generated from the Typer app itself so it cannot drift from the code:
`python -m vlkd.cli.reference` prints it, and a test compares it with the README."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

START, END = "<!-- cli-reference: start (python -m vlkd.cli.reference) -->", "<!-- cli-reference: end -->"


# Typer builds click-style commands (its own vendored click): read them by their attributes, in the order the
# commands were registered.


def _commands(group: Any, path: str) -> Iterator[tuple[str, Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, f"{path} {name}")
        elif not command.hidden:
            yield f"{path} {name}", command


def _usage(path: str, command: Any) -> str:
    arguments = [
        (f"{p.name.upper()}..." if p.nargs == -1 else p.name.upper()) if p.required else f"[{p.name.upper()}]"
        for p in command.params
        if p.param_type_name == "argument"
    ]
    return " ".join([path, *arguments, *(["[OPTIONS]"] if _options(command) else [])])


def _options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and not p.hidden and p.name != "help"]


def _option_line(option: Any) -> str:
    names = ", ".join(f"`{n}`" for n in [*option.opts, *option.secondary_opts])
    kind = "" if option.is_flag else f" {option.metavar or option.name.upper()}"
    help_text = " ".join((option.help or "").split())
    return f"  - {names}{kind}: {help_text}".rstrip(": ")


def reference(app: typer.Typer) -> str:
    """Every command: its usage, the first paragraph of its help, and its options."""
    root = typer.main.get_command(app)
    blocks = []
    for path, command in _commands(root, "vlkd"):
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        lines = [f"**`{_usage(path, command)}`** — {summary}"]
        lines += [_option_line(option) for option in _options(command)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main() -> None:
    from vlkd.cli.main import app

    print(f"{START}\n{reference(app)}\n{END}")


if __name__ == "__main__":
    main()
