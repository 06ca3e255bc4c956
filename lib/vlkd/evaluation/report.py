"""The comparison report of an eval run: Markdown (`report.md`) and a plain-text rendering for a terminal.

Tables follow the paper's layouts (`layouts`); a table holds only the columns that were measured, and a row's
average only when it has every column (headed `Avg. (2 of 7)` when the table lacks some of the paper's columns).
Under a table, a line names each row whose model is published at another training step than the baseline's. A
cell is the mean over seeds, `± std` when there were several, its median from three seeds on, and `!` when one of
its runs is flagged (`flags`; the notes say which and why). Reference rows (majority class, bag-of-words LR,
always no answer) follow the models', labelled as references and never averaged.
Each row's difference from the baseline row comes with its 95% interval (`bootstrap`), marked `(noise)` when
the interval contains 0. The ablation tables (Tables 2-7) follow the main ones, each laid out alike: the baseline,
then its rows under their labels, the table's tasks only and no average. Then: every metric per task, each row's
artifact ref and lineage, the KD terms' balance, the teacher retrieval table (against chance, with a link to its
example page) and the cost (both `report_tables`), the charts (a bar chart per task; training curves) and the notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlkd.ablation_table import table_results
from vlkd.evaluation.balance import BALANCE_NOTE, balance_table
from vlkd.evaluation.bootstrap import EXAMPLES_ONLY_NOTE, LEVEL, NOT_COVERED_NOTE, SEED_INTERVAL_NOTE
from vlkd.evaluation.differences import AVERAGE, difference_key
from vlkd.evaluation.flags import THRESHOLDS
from vlkd.evaluation.layouts import LAYOUTS, Column, Layout
from vlkd.evaluation.references import REFERENCES
from vlkd.evaluation.report_tables import COST_NOTE, RETRIEVAL_NOTE, cost_rows, retrieval_rows
from vlkd.evaluation.results import RESULTS_FILE, reference_metric, write_results
from vlkd.evaluation.table_text import MISSING, aligned_table, markdown_table
from vlkd.evaluation.tasks import TASKS

REPORT_FILE = "report.md"
NOT_AVERAGED = "-"
FLAG = "!"
NOISE = "(noise)"
CELL_NOTE = (
    f"Mean over seeds ± sample std (median from three seeds on); {FLAG}: a run of the cell is flagged (see the "
    "notes). Reference rows are never averaged."
)
R3_NOTE = (
    "The diagnostic's R3s: the same, over each dev example's share of the correlation (its first-order influence)."
)
R3_UNKEPT_NOTE = "The diagnostic's R3 differences have none: its runs kept no predicted labels (an older results.json)."
CURVES_NOTE = (
    "Each run's training loss (mean over windows of steps) and its main metric on dev after every epoch: a panel "
    "per task and model, a line per seed; dashed, the majority-class reference."
)
RETRIEVAL_PAGE = "retrieval/index.html"
"""the eval artifact's page of example queries and their top videos (`retrieval.write_examples`)"""
_LINEAGE_NAMES = {"published_step": "published weights"}


def _stat(results: Mapping[str, Any], row: str, column: Column) -> dict[str, float] | None:
    return results["summary"].get(row, {}).get(column.task, {}).get(column.metric)


def _cell(stat: Mapping[str, Any] | None) -> str:
    if stat is None:
        return MISSING
    text = f"{stat['mean']:.1f}"
    if stat["seeds"] > 1:
        text += f" ± {stat['std']:.1f}"
    if stat["seeds"] > 2:  # the median of two is their mean
        text += f" (median {stat['median']:.1f})"
    return text + (f" {FLAG}" if stat.get("flags") else "")


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # + 0.0: a difference that rounds to zero is +0.0, not -0.0


def reference_label(name: str) -> str:
    """A reference row's name in the tables."""
    return f"{REFERENCES[name].label} (reference)"


def _means(results: Mapping[str, Any], row: str, layout: Layout, columns: Sequence[Column]) -> list[float | None]:
    """The row's mean per column and, for a layout with an average, the mean of those (None if one is missing)."""
    means = [stat["mean"] if (stat := _stat(results, row, c)) else None for c in columns]
    if layout.average:
        means.append(None if None in means else sum(means) / len(means))
    return means


def average_header(layout: Layout, columns: Sequence[Column]) -> str:
    """The average column's header: the paper's `Avg.` over all the layout's columns, else how many it covers
    (`Avg. (2 of 7)`), so a mean of the tasks that ran is not read as the paper's."""
    if len(columns) == len(layout.columns):
        return "Avg."
    return f"Avg. ({len(columns)} of {len(layout.columns)})"


def table_rows(results: Mapping[str, Any], layout: Layout) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(header, value rows, difference rows) of one layout: only the columns some model row has a value for;
    the model rows, then the reference rows; differences of the model rows against the baseline row (none
    without a baseline), with their intervals."""
    columns = [c for c in layout.columns if any(_stat(results, m["row"], c) for m in results["models"])]
    if not columns:
        return [], [], []
    header = ["Model", *(c.header for c in columns), *([average_header(layout, columns)] if layout.average else [])]
    rows, differences = [], []
    baseline = results.get("baseline")
    reference = _means(results, baseline, layout, columns) if baseline else None
    for model in results["models"]:
        row = model["row"]
        cells = [_cell(_stat(results, row, c)) for c in columns]
        means = _means(results, row, layout, columns)
        if layout.average:
            cells.append(MISSING if means[-1] is None else f"{means[-1]:.1f}")
        rows.append([row, *cells])
        if reference is not None and row != baseline:
            intervals = _intervals(results, row, layout, columns)
            differences.append([row, *map(_difference, means, reference, intervals)])
    return header, rows + _reference_rows(results, columns, layout.average), differences


def _reference_rows(results: Mapping[str, Any], columns: Sequence[Column], average: bool) -> list[list[str]]:
    """A row per reference that has a value in some column; its average cell, if any, says it is not averaged."""
    rows = []
    for name in REFERENCES:
        values = [reference_metric(results.get("references", {}), c.task, name, c.metric) for c in columns]
        if any(v is not None for v in values):
            cells = [MISSING if v is None else f"{v:.1f}" for v in values]
            rows.append([reference_label(name), *cells, *([NOT_AVERAGED] if average else [])])
    return rows


def _intervals(
    results: Mapping[str, Any], row: str, layout: Layout, columns: Sequence[Column]
) -> list[Mapping[str, Any] | None]:
    """The interval of each column's difference (where its metric is a mean over examples), and of the average."""
    differences = results.get("differences", {}).get(row, {})
    intervals = [differences.get(difference_key(c.task, c.metric)) for c in columns]
    return intervals + ([differences.get(AVERAGE)] if layout.average else [])


def _difference(value: float | None, reference: float | None, interval: Mapping[str, Any] | None) -> str:
    if value is None or reference is None:
        return MISSING
    if interval is None:
        return _signed(value - reference)
    noise = f" {NOISE}" if interval["within_noise"] else ""
    return f"{_signed(value - reference)} [{_signed(interval['low'])}, {_signed(interval['high'])}]{noise}"


@dataclass(frozen=True)
class Comparison:
    """One comparison table as the report shows it: its rows' values, then their differences from the baseline."""

    heading: str
    header: list[str]
    rows: list[list[str]]
    differences: list[list[str]]
    baseline: str | None
    unequal_training: list[str]
    """a line per row whose model is published at another training step than the baseline's"""
    multiplicity: list[str]
    """how many of the table's per-column intervals exclude 0, against how many would by chance (two or more)"""


def comparisons(results: Mapping[str, Any]) -> list[Comparison]:
    """Every comparison table of the results, in the report's order: one per layout with values, then the same
    per ablation table (results.json's `tables`: its rows under their labels, `ablation_table.table_results`),
    headed by its title (and, past its first layout, the layout's). An ablation table shows the tasks it names
    (all by default) and no average: the paper's Tables 2-7 have none."""
    shown = _comparisons_of(results, LAYOUTS, None)
    for table in results.get("tables", []):
        cut = table_results(results, [tuple(row) for row in table["rows"]])
        tasks = table.get("tasks")
        layouts = [
            Layout(layout.title, tuple(c for c in layout.columns if tasks is None or c.task in tasks), average=False)
            for layout in LAYOUTS
        ]
        shown += _comparisons_of(cut, layouts, table["title"])
    return shown


def _comparisons_of(results: Mapping[str, Any], layouts: Sequence[Layout], title: str | None) -> list[Comparison]:
    """The layouts that have values, each a comparison headed by the layout's title or, in an ablation table's
    section (`title`), by the table's title first and then `title: layout`."""
    built = [(layout, table_rows(results, layout)) for layout in layouts]
    built = [(layout, rows) for layout, rows in built if rows[0]]
    return [
        Comparison(
            layout.title if title is None else title if i == 0 else f"{title}: {layout.title}",
            *rows,
            results.get("baseline"),
            unequal_training(results),
            multiplicity(results, layout),
        )
        for i, (layout, rows) in enumerate(built)
    ]


def multiplicity(results: Mapping[str, Any], layout: Layout) -> list[str]:
    """With many comparisons some intervals exclude 0 by luck alone (Table 5 has 30): the line that says how many
    of a table's per-column intervals (not the average's) exclude 0, against the number expected when no
    difference is real; none for fewer than two."""
    baseline = results.get("baseline")
    shown = {difference_key(c.task, c.metric) for c in layout.columns}
    entries = [
        entry
        for model in results["models"]
        if model["row"] != baseline
        for key, entry in results.get("differences", {}).get(model["row"], {}).items()
        if key in shown
    ]
    if len(entries) < 2:
        return []
    excluding = sum(not entry["within_noise"] for entry in entries)
    chance = len(entries) * (1 - LEVEL)
    return [
        f"{excluding} of these {len(entries)} per-column intervals exclude 0; with no real difference, about "
        f"{chance:.1f} would by chance alone."
    ]


def unequal_training(results: Mapping[str, Any]) -> list[str]:
    """A line per model row published at another training step than the baseline (its lineage's
    `published_step`): its difference mixes what it adds with a longer or shorter training."""
    baseline = results.get("baseline")
    steps = {model["row"]: model.get("lineage", {}).get("published_step") for model in results["models"]}
    if steps.get(baseline) is None:
        return []
    return [
        f"{row} is published at step {step}, its baseline {baseline} at step {steps[baseline]}: not equal training"
        for row, step in steps.items()
        if row != baseline and step is not None and step != steps[baseline]
    ]


def render_markdown(
    results: Mapping[str, Any],
    charts: Mapping[str, str] | None = None,
    curves: Mapping[str, str] | None = None,
    retrieval_page: str | None = None,
) -> str:
    """report.md: the tables, differences, all metrics, lineage, KD term balance, retrieval, notes and the charts: given
    `charts` (task -> PNG path relative to the report), the bar charts; given `curves` (title -> PNG path), the
    training curves; given `retrieval_page` (its path relative to the report), a link to the retrieval examples."""
    parts = ["# Evaluation report", *legend(results)]
    for table in comparisons(results):
        parts += [f"## {table.heading}", markdown_table(table.header, table.rows)]
        parts += table.unequal_training
        if table.differences:
            parts += [f"Difference from **{table.baseline}**:", markdown_table(table.header, table.differences)]
            parts += table.multiplicity
    if results["tasks"]:
        parts += ["## All metrics", *_all_metrics(results)]
    if results["models"]:
        parts += ["## Models", "\n".join(_lineage_line(model) for model in results["models"])]
    if balance := balance_table(results["models"]):
        parts += ["## KD term balance", BALANCE_NOTE, markdown_table(*balance)]
    if results.get("retrieval"):
        table = markdown_table(*retrieval_rows(results["retrieval"]))
        parts += ["## Teacher text-to-video retrieval", RETRIEVAL_NOTE, table]
        if retrieval_page:
            parts.append(f"Example queries and their top videos: [{retrieval_page}]({retrieval_page})")
    if any(model.get("cost") for model in results["models"]):
        parts += ["## Cost", COST_NOTE, markdown_table(*cost_rows(results["models"]))]
    if charts:
        parts += ["## Charts", "\n".join(f"![{TASKS[t].title}]({path})" for t, path in charts.items())]
    if curves:
        parts += ["## Training curves", CURVES_NOTE, "\n".join(f"![{title}]({path})" for title, path in curves.items())]
    if notes := report_notes(results):
        parts += ["## Notes", "\n".join(f"- {note}" for note in notes)]
    return "\n\n".join(parts) + "\n"


def legend(results: Mapping[str, Any]) -> list[str]:
    """What the tables' marks mean: the cells', and the intervals' when some difference has one: what they cover
    (seeds, dev examples) and not (pretraining), the one-seed fallback's gap where some interval used it, and how
    the diagnostic's R3 columns get theirs (or why they have none)."""
    if not results["summary"]:
        return []
    differences = results.get("differences", {})
    methods = {entry.get("over_seeds", True) for tasks in differences.values() for entry in tasks.values()}
    if not methods:
        return [CELL_NOTE]
    how = [SEED_INTERVAL_NOTE] * (True in methods) + [EXAMPLES_ONLY_NOTE] * (False in methods)
    noise = f"{NOISE}: the interval contains 0, the difference is within noise."
    r3 = []
    if "glue_diagnostic" in results["tasks"]:
        r3 = [R3_NOTE if "glue_diagnostic" in results.get("gold", {}) else R3_UNKEPT_NOTE]
    return [CELL_NOTE, " ".join([f"[{LEVEL:.0%} interval]:", *how, NOT_COVERED_NOTE, noise, *r3])]


def report_notes(results: Mapping[str, Any]) -> list[str]:
    """The results' notes, then every flagged run with what flagged it."""
    flagged = [
        f"{FLAG} {row}, {TASKS[task].title}, seed {run['seed']}: {'; '.join(run['flags'])}"
        for row, tasks in results["summary"].items()
        for task, metrics in tasks.items()
        for run in metrics.get(TASKS[task].main_metric, {}).get("flags", [])
    ]
    if flagged:
        flagged.insert(0, f"{FLAG} Flagged runs ({THRESHOLDS}):")
    return [*results.get("notes", []), *flagged]


def _all_metrics(results: Mapping[str, Any]) -> list[str]:
    parts = []
    for task in results["tasks"]:
        metrics = sorted({m for row in results["summary"].values() for m in row.get(task, {})})
        columns = [Column(task, metric, metric) for metric in metrics]
        rows = [[m["row"], *(_cell(_stat(results, m["row"], c)) for c in columns)] for m in results["models"]]
        references = _reference_rows(results, columns, average=False)
        parts += [f"### {TASKS[task].title}", markdown_table(["Model", *metrics], rows + references)]
    return parts


def _lineage_line(model: Mapping[str, Any]) -> str:
    """The model's ref and lineage in plain words (`published weights: step 200 of 300`, `kd: nst 1.0, crd 1.0`),
    less the KD-term balance (a table of its own)."""
    shown = {key: value for key, value in model["lineage"].items() if key != "kd_balance"}
    if shown.get("published_step") is not None:
        steps = shown.pop("steps", None)
        shown["published_step"] = f"step {shown['published_step']}" + (f" of {steps}" if steps is not None else "")
    details = "; ".join(
        f"{_LINEAGE_NAMES.get(key, key.replace('_', ' '))}: {_plain(value)}" for key, value in shown.items()
    )
    return f"- **{model['row']}**: `{model['ref']}`" + (f"; {details}" if details else "")


def _plain(value: Any) -> str:
    """A lineage value as text: a list as `a + b`, a mapping as `nst 1.0, crd 1.0`, nothing as `none`."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return " + ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def render_table(results: Mapping[str, Any]) -> str:
    """The report's tables as aligned plain text, for a terminal (the notes, flagged runs among them, are
    `report_notes`)."""
    blocks = []
    for table in comparisons(results):
        blocks.append("\n".join([table.heading, aligned_table(table.header, table.rows), *table.unequal_training]))
        if table.differences:
            difference = [f"Difference from {table.baseline}", aligned_table(table.header, table.differences)]
            blocks.append("\n".join([*difference, *table.multiplicity]))
    if key := legend(results):
        blocks.append("\n".join(key))
    if balance := balance_table(results["models"]):
        blocks.append("KD term balance\n" + aligned_table(*balance))
    if results.get("retrieval"):
        blocks.append("Teacher text-to-video retrieval\n" + aligned_table(*retrieval_rows(results["retrieval"])))
    if any(model.get("cost") for model in results["models"]):
        blocks.append("Cost\n" + aligned_table(*cost_rows(results["models"])))
    return "\n\n".join(blocks) if blocks else "no results"


def write_report(results: Mapping[str, Any], out_dir: Path, charts: bool = True) -> dict[str, Path]:
    """Write results.json, report.md and (with `charts`, which needs matplotlib) under `charts/` one PNG bar
    chart per task and the training curves into `out_dir`; returns what was written by name."""
    from vlkd.evaluation.charts import write_charts, write_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {RESULTS_FILE: write_results(results, out_dir / RESULTS_FILE)}
    bars = write_charts(results, out_dir / "charts") if charts else {}
    curves = write_curves(results, out_dir / "charts") if charts else {}

    def relative(pngs: Mapping[str, Path]) -> dict[str, str]:
        return {key: path.relative_to(out_dir).as_posix() for key, path in pngs.items()}

    page = RETRIEVAL_PAGE if (out_dir / RETRIEVAL_PAGE).is_file() else None
    markdown = render_markdown(results, relative(bars), relative(curves), page)
    (out_dir / REPORT_FILE).write_text(markdown, encoding="utf-8")
    written[REPORT_FILE] = out_dir / REPORT_FILE
    return written | {f"charts/{path.name}": path for path in [*bars.values(), *curves.values()]}
