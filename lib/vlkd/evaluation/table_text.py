"""Tables as text: the report's Markdown tables (written, and read back by its readers and tests) and their
plain-text form for a terminal."""

from __future__ import annotations

import re
from collections.abc import Sequence

from vlkd.errors import DataError

_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
MISSING = "n/a"
"""a cell whose value was not measured"""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with its numeric columns centred; a `|` in a cell is escaped (`parse_tables` reads it back)."""
    lines = [header, ["---", *([":---:"] * (len(header) - 1))], *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines)


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table as plain text for a terminal: columns padded to their widest cell, the first left-aligned (the
    row's label), the others right-aligned (numbers)."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *rows]
    )


def parse_tables(markdown: str) -> list[list[list[str]]]:
    """Every Markdown table in `markdown` as [header, *rows] (the separator line dropped), each checked: a
    separator after the header, and as many cells in every line as in the header."""
    tables, block = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            tables.append(_parse_table(block))
            block = []
    return tables


def _parse_table(lines: list[str]) -> list[list[str]]:
    cells = [_cells(line) for line in lines]
    if len(cells) < 2 or not all(set(c) <= set(":-") and "-" in c for c in cells[1]):
        raise DataError(f"Markdown table without a separator line under its header: {lines[0]}")
    bad = [line for line, row in zip(lines, cells, strict=True) if len(row) != len(cells[0])]
    if bad:
        raise DataError(f"Markdown table rows with a cell count other than the header's {len(cells[0])}: {bad}")
    return [cells[0], *cells[2:]]


def _cells(line: str) -> list[str]:
    inner = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(inner)]
