"""The results as a table: rows for the GUI, a CSV file, or text for the terminal."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidInputError, MutexWatershedError, UnsafeOutputError
from ..storage.paths import replace_file
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


def check_csv_target(path: str | Path, protected: dict) -> Path:
    """Refuse, before a sweep runs, a table path that is a folder, is, holds or lies in one of
    the ``protected`` inputs (by role), is an existing file other than a table written here
    (never replaced), or lies where no file can be made."""
    from ..safety import check_output_location

    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"the table goes to a file, and {path} is a folder: give a file "
                                "name such as sweep.csv")
    check_output_location(path, protected, only_ours=False)
    if path.exists() and not (path.is_file() and _is_our_table(path)):
        raise UnsafeOutputError(f"{path} exists and is not a table written by a sweep, so it is "
                                "never replaced: choose another file")
    folder = path.parent
    if not folder.is_dir():
        raise InvalidInputError(f"cannot write {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"cannot write {path}: the folder {folder} is not writable")
    return path


def _is_our_table(path: Path) -> bool:
    """Empty, or a CSV whose header is this table's."""
    with path.open("r", errors="replace") as handle:
        first = handle.readline(4096)
    return not first or first.rstrip("\r\n") == ",".join(CSV_COLUMNS)


def write_csv(results: Sequence[SweepResult], path: str | Path) -> Path:
    """The ranked table as CSV, with each setting's full parameters as JSON; the file is
    replaced at once (``replace_file``), never left half-written."""
    path = Path(path)
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in table_rows(results):
        writer.writerow({
            key: "" if value is None else (json.dumps(value) if isinstance(value, list)
                                           else value)
            for key, value in row.items()
        })
    try:
        replace_file(path, text.getvalue().encode())
    except OSError as error:
        raise MutexWatershedError(f"cannot write the table to {path}: "
                                  f"{error.strerror or error}") from None
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


