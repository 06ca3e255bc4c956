"""Readers of the downstream tasks' official files, unchanged, into three kinds of examples.

- GLUE TSVs as `download_glue_data.py` unpacks them: one header line, tab-separated, no quoting (a quote is a
  character like any other), columns found by header name.
- SQuAD v1.1 / v2.0 JSON, SWAG's CSV (`rowanz/swagaf`), PIQA's JSON Lines plus a labels file, TRACIE's text
  lines (`allenai/tracie`), GLUE's diagnostic TSV.
Every problem names the file (and line) and says what was expected.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from vlkd.errors import DataError, NotFoundError


@dataclass(frozen=True)
class TextPair:
    """A sentence (pair) to classify. `meta` holds what a task's scorer needs besides the label (the
    diagnostic's categories)."""

    text_a: str
    text_b: str | None
    label: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MultipleChoice:
    """A context and its candidate continuations; `label` is the index of the right one."""

    context: str
    endings: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class Question:
    """A SQuAD question: `answers` are (text, character offset in `context`); none when it is unanswerable."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]


Example = TextPair | MultipleChoice | Question


def task_file(folder: Path, name: str) -> Path:
    path = Path(folder) / name
    if not path.is_file():
        present = sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
        raise NotFoundError(
            f"{path} not found: the task's data folder must hold its official files as released "
            f"(present: {', '.join(present) or 'nothing'})"
        )
    return path


def read_tsv_columns(path: Path, columns: tuple[str, ...], skip_short: bool = False) -> list[tuple[str, ...]]:
    """The named columns of every row of a GLUE TSV. `skip_short`: drop rows with fewer fields than the header
    (QQP's official train.tsv has a few broken lines; GLUE's own loaders skip them too)."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected a header line with {', '.join(columns)}")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: no column {', '.join(missing)} in the header {header}; is it the official file?")
        indices = [header.index(c) for c in columns]
        selected = []
        for line, row in enumerate(rows, start=2):
            if len(row) < len(header):
                if skip_short:
                    continue
                raise DataError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            selected.append(tuple(row[i] for i in indices))
        return selected


def read_glue_pairs(
    path: Path, text_columns: tuple[str, ...], label_column: str, skip_short: bool = False
) -> list[TextPair]:
    """GLUE sentence (pair) classification rows: one or two text columns and a label column."""
    rows = read_tsv_columns(path, (*text_columns, label_column), skip_short)
    if len(text_columns) == 1:
        return [TextPair(text, None, label) for text, label in rows]
    return [TextPair(a, b, label) for a, b, label in rows]


def read_diagnostic(path: Path, categories: tuple[str, ...]) -> list[TextPair]:
    """GLUE's `diagnostic-full.tsv`: premise, hypothesis, NLI label, and per coarse category the fine-grained
    tags (`;`-separated; empty when the example is not in that category)."""
    rows = read_tsv_columns(path, ("Premise", "Hypothesis", "Label", *categories))
    return [TextPair(p, h, label, dict(zip(categories, tags, strict=True))) for p, h, label, *tags in rows]


def read_squad(path: Path) -> list[Question]:
    """SQuAD v1.1 or v2.0 JSON; a v2.0 question with `is_impossible` has no answers."""
    try:
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        return [
            Question(
                qa["id"],
                qa["question"],
                paragraph["context"],
                () if qa.get("is_impossible") else tuple((a["text"], a["answer_start"]) for a in qa["answers"]),
            )
            for article in articles
            for paragraph in article["paragraphs"]
            for qa in paragraph["qas"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a SQuAD file ({type(exc).__name__}: {exc}); expected the official JSON") from None


def read_swag(path: Path) -> list[MultipleChoice]:
    """SWAG's CSV: the context is `sent1`; each choice is `sent2` followed by an ending (as the SWAG baselines
    and Hugging Face's run_swag pair them)."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        needed = ("sent1", "sent2", "ending0", "ending1", "ending2", "ending3", "label")
        missing = [c for c in needed if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: no column {', '.join(missing)}; expected SWAG's train.csv / val.csv")
        return [
            MultipleChoice(
                row["sent1"], tuple(f"{row['sent2']} {row[f'ending{i}']}" for i in range(4)), int(row["label"])
            )
            for row in reader
        ]


def read_piqa(jsonl: Path, labels: Path) -> list[MultipleChoice]:
    """PIQA: `{"goal", "sol1", "sol2"}` per line, and the right solution's index in the labels file."""
    goals = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [int(line) for line in labels.read_text(encoding="utf-8").split()]
    if len(goals) != len(answers):
        raise DataError(
            f"{jsonl} has {len(goals)} examples but {labels} has {len(answers)} labels; use a matching pair"
        )
    return [MultipleChoice(g["goal"], (g["sol1"], g["sol2"]), label) for g, label in zip(goals, answers, strict=True)]


def read_tracie(path: Path) -> list[TextPair]:
    """TRACIE's `event: ... story: ...<TAB>answer: positive|negative` lines as NLI pairs: premise = the story,
    hypothesis = the query (`event: ... starts|ends before|after ...`), as its leaderboard files split them."""
    pairs = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        statement, _, answer = line.partition("\t")
        query, found, story = statement.partition("story:")
        if not found or not answer.startswith("answer:"):
            raise DataError(f"{path}:{line_number}: expected 'event: ... story: ...<TAB>answer: positive|negative'")
        pairs.append(TextPair(story.strip(), query.strip(), answer.removeprefix("answer:").strip()))
    return pairs
