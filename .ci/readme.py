"""Print a line of README's "Try it" block, so CI runs exactly what a new user copies.

``python3 .ci/readme.py 1``: the first command (install with the GUI, sample, segment);
``python3 .ci/readme.py 2``: the second (napari with the widget docked). Standard library
only: CI runs it before any venv exists. Tests import ``try_it_lines`` too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def try_it_lines(text: str | None = None) -> list[str]:
    """The non-empty lines of the first ```bash block under the "## Try it" heading."""
    text = README.read_text(encoding="utf-8") if text is None else text
    section = re.search(r"^## Try it.*?$(.*?)(?=^## )", text, re.M | re.S)
    if section is None:
        raise SystemExit('README.md has no "## Try it" section')
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)
    if block is None:
        raise SystemExit('README.md\'s "Try it" section has no ```bash block')
    return [line for line in block.group(1).splitlines() if line.strip()]


if __name__ == "__main__":
    print(try_it_lines()[int(sys.argv[1]) - 1])
