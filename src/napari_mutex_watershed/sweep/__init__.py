"""Parameter sweeps: segment one crop with a grid of settings and score each against a
(sparse) ground truth.

Pure engine level (no Qt or napari import): the napari Sweep section
(``gui/sweep_panel.py``) and the ``sweep`` command of the CLI both use it. One module per
concern: ``grid`` (the settings), ``scoring`` (scores and ranking), ``table`` (rows, CSV,
text), ``pool`` (worker processes), ``inputs`` (the crop and ground truth a command names).
"""

from .grid import (
    DEFAULT_BIASES,
    MAX_SETTINGS,
    SWEPT,
    Setting,
    format_number,
    parameter_grid,
    parse_values,
    value_range,
)
from .pool import NICENESS, Sweeper, SweepInputs, SweepJob, run_setting, run_sweep
from .scoring import Scores, SweepResult, best, count_segments, rank, score
from .table import (
    COLUMNS,
    CSV_COLUMNS,
    format_cell,
    format_table,
    table_rows,
    write_csv,
)

__all__ = [
    "COLUMNS",
    "CSV_COLUMNS",
    "DEFAULT_BIASES",
    "MAX_SETTINGS",
    "NICENESS",
    "SWEPT",
    "Scores",
    "Setting",
    "SweepInputs",
    "SweepJob",
    "SweepResult",
    "Sweeper",
    "best",
    "count_segments",
    "format_cell",
    "format_number",
    "format_table",
    "parameter_grid",
    "parse_values",
    "rank",
    "run_setting",
    "run_sweep",
    "score",
    "table_rows",
    "value_range",
    "write_csv",
]
