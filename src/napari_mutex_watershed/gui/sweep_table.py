"""The Sweep section's table: one row per setting, sortable by its numbers, the best row
highlighted, every column within the dock's width."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor, QFont, QFontMetrics
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from ..sweep import COLUMNS, format_cell, rank, table_rows

BEST_COLOUR = QColor(46, 125, 70)
INDEX_ROLE = Qt.ItemDataRole.UserRole  # a row's setting (its index in the grid)
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
SETTING_COLUMN = [key for key, _ in COLUMNS].index("setting")

#: Column titles in the panel (short: it is a dock) and their tooltips.
HEADERS = {
    "rank": ("#", "Rank: by adapted Rand error, ties in grid order"),
    "setting": ("Setting", "The swept values (the layer is 'sweep <setting>')"),
    "adapted_rand_error": ("ARE", "Adapted Rand error (skimage.metrics.adapted_rand_error): "
                           "1 - F-score of the pairs of labelled voxels put together. "
                           "Lower is better."),
    "voi_split": ("Split", "VOI split: H(segmentation | ground truth): over-segmentation. Lower "
                  "is better."),
    "voi_merge": ("Merge", "VOI merge: H(ground truth | segmentation): under-segmentation. Lower "
                  "is better."),
    "n_segments": ("Segs", "Number of segments in the shown region"),
    "seconds": ("Time", "Segmentation time in the worker, in seconds"),
}


class _Item(QTableWidgetItem):
    """A table cell that sorts by its number (text sorts '10' before '9')."""

    def __init__(self, text: str, sort_key) -> None:
        super().__init__(text)
        self.setData(SORT_ROLE, sort_key)
        self.setFlags(Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled)
        if isinstance(sort_key, (int, float)):
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        try:
            return (mine is None, mine) < (theirs is None, theirs)
        except TypeError:
            return str(mine) < str(theirs)


class SweepTable(QTableWidget):
    """Rows as results arrive (``add_result``), then ranked (``show_ranked``)."""

    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels([HEADERS[key][0] for key, _ in COLUMNS])
        for column, (key, _) in enumerate(COLUMNS):
            self.horizontalHeaderItem(column).setToolTip(HEADERS[key][1])
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        # the numbers take what their texts need (``fit_columns``), the setting the rest (cut,
        # whole in its tooltip): every column fits the dock's width, with no scrolling
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(SETTING_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(16)
        header.setStyleSheet("QHeaderView::section { padding: 0px 2px; }")
        self.fit_columns()
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumHeight(150)
        self.setMaximumHeight(330)
        self.setToolTip(
            "Lower is better for every score. Adapted Rand error: 1 - F-score of the pairs "
            "of labelled voxels put together; VOI split / merge: conditional entropies of "
            "the segmentation given the ground truth (over-segmentation) and the reverse "
            "(under-segmentation). Click a header to sort; the best row is highlighted.")

    def clear_rows(self) -> None:
        self.setSortingEnabled(False)
        self.clearContents()
        self.setRowCount(0)
        self.setSortingEnabled(True)

    def fit_columns(self) -> None:
        """Each number column as wide as its widest text, title included (the sort arrow
        may cover a title's end: the header's tooltip has it whole)."""
        bold = QFont(self.font())
        bold.setBold(True)  # (the best row's)
        metrics = QFontMetrics(bold)
        rows = range(self.rowCount())
        for column, (key, _) in enumerate(COLUMNS):
            if column == SETTING_COLUMN:
                continue
            texts = [HEADERS[key][0]] + [self.item(r, column).text() for r in rows
                                         if self.item(r, column) is not None]
            width = max(metrics.horizontalAdvance(text) for text in texts) + 8
            self.horizontalHeader().resizeSection(column, width)

    def add_result(self, result, position: int | None = None) -> int:
        """Append a row for ``result`` (``position``: its rank); returns its row number."""
        row_values = table_rows([result])[0]
        row_values["rank"] = position
        sorting = self.isSortingEnabled()
        self.setSortingEnabled(False)
        row = self.rowCount()
        self.insertRow(row)
        for column, (key, _title) in enumerate(COLUMNS):
            value = row_values[key]
            if key == "setting":
                text, sort_key = value, result.setting.index
            else:
                text, sort_key = format_cell(key, value), value
            item = _Item(text, sort_key)
            item.setData(INDEX_ROLE, result.setting.index)
            if result.error:
                item.setToolTip(f"failed: {result.error}")
            elif key == "setting":
                item.setToolTip(text)
            self.setItem(row, column, item)
        self.setSortingEnabled(sorting)
        self.fit_columns()
        return row

    def show_ranked(self, results, best_result) -> None:
        """Every result in rank order, the best one highlighted."""
        self.clear_rows()
        self.setSortingEnabled(False)
        for position, result in enumerate(rank(results), start=1):
            self.add_result(result, position)
        self.setSortingEnabled(True)
        self.sortItems(0, Qt.SortOrder.AscendingOrder)
        if best_result is None:
            return
        row = self.row_of(best_result.setting.index)
        font = QFont(self.font())
        font.setBold(True)
        for column in range(self.columnCount()):
            item = self.item(row, column)
            item.setBackground(QBrush(BEST_COLOUR))
            item.setFont(font)
            item.setToolTip("Best: lowest adapted Rand error")

    def row_of(self, index: int) -> int:
        """Row (as currently sorted) of the setting with grid ``index``."""
        for row in range(self.rowCount()):
            if self.item(row, 0).data(INDEX_ROLE) == index:
                return row
        raise KeyError(index)

    def selected_index(self) -> int | None:
        """The grid index of the selected row's setting (None: no selection)."""
        rows = {item.row() for item in self.selectedItems()}
        return self.item(min(rows), 0).data(INDEX_ROLE) if rows else None
