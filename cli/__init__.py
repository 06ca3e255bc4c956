"""The laptop side: the `vlkd` Typer CLI. Thin: parse, call the library, print."""
