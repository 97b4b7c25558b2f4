"""The questions a full run asks before it replaces or resumes an output, and the output
chooser (Qt dialogs, modal)."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox


def ask_overwrite(parent, path: Path) -> bool:
    """Replace an output of another run? (No by default.)"""
    answer = QMessageBox.question(
        parent, "Replace existing output?",
        f"{path} already exists (another run, other parameters or other data).\n\n"
        "Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def ask_resume(parent, path: Path, finished: bool) -> str:
    """'resume' (or open, if finished), 'overwrite' (Start over) or 'cancel'."""
    box = QMessageBox(parent)
    box.setWindowTitle("Existing run")
    if finished:
        box.setText(f"{path} was already computed with these parameters.")
        resume = box.addButton("Open it", QMessageBox.ButtonRole.AcceptRole)
    else:
        box.setText(f"{path} is an unfinished run with these parameters.")
        resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
    again = box.addButton("Start over", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.exec()
    clicked = box.clickedButton()
    return "resume" if clicked is resume else "overwrite" if clicked is again else "cancel"


def choose_output(parent, start: str) -> str | None:
    """A .zarr container chosen by the user (None: cancelled)."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Output labels (inside a .zarr container)", start, "zarr container (*.zarr)")
    if not path:
        return None
    return path if ".zarr" in path else path + ".zarr"
