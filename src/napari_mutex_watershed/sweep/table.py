"""The results as a table: rows for the GUI, a CSV file, or text for the terminal."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from .scoring import SweepResult, rank

#: Columns of the table: (CSV header, title in the GUI and the printed table).
COLUMNS = [
    ("rank", "Rank"),
    ("setting", "Setting"),
    ("adapted_rand_error", "Adapted Rand error"),
    ("voi_split", "VOI split"),
    ("voi_merge", "VOI merge"),
    ("n_segments", "Segments"),
    ("seconds", "Seconds"),
]
CSV_COLUMNS = [c for c, _ in COLUMNS] + ["bias", "threshold", "min_size", "error",
                                        "parameters"]


def table_rows(results: Sequence[SweepResult]) -> list[dict]:
    """One dict per result, ranked, with the CSV columns (numbers as numbers, None if
    unknown)."""
    rows = []
    for position, result in enumerate(rank(results), start=1):
        scores = result.scores
        parameters = result.parameters
        rows.append({
            "rank": position,
            "setting": result.name,
            "adapted_rand_error": None if scores is None else scores.adapted_rand_error,
            "voi_split": None if scores is None else scores.voi_split,
            "voi_merge": None if scores is None else scores.voi_merge,
            "n_segments": None if result.error else result.n_segments,
            "seconds": round(result.seconds, 3),
            "bias": parameters.bias,
            "threshold": parameters.threshold,
            "min_size": parameters.min_size,
            "error": result.error or "",
            "parameters": parameters.model_dump_json(),
        })
    return rows


def write_csv(results: Sequence[SweepResult], path: str | Path) -> Path:
    """The ranked table as CSV, with each setting's full parameters as JSON."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in table_rows(results):
            writer.writerow({
                key: "" if value is None else (json.dumps(value) if isinstance(value, list)
                                               else value)
                for key, value in row.items()
            })
    return path


def format_cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("adapted_rand_error", "voi_split", "voi_merge"):
        return f"{value:.4f}"
    if key == "seconds":
        return f"{value:.2f}"
    return str(value)


def format_table(results: Sequence[SweepResult]) -> str:
    """The ranked table as aligned text (the CLI prints it)."""
    rows = table_rows(results)
    header = [title for _, title in COLUMNS]
    body = [[format_cell(key, row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
    lines = ["  ".join(h.ljust(w) if i == 1 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    for cells, row in zip(body, rows):
        line = "  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
        lines.append(line + (f"  error: {row['error']}" if row["error"] else ""))
    return "\n".join(lines)


