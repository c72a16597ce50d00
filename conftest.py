"""nbval settings for the course notebooks (at the root: notebooks/conftest.py and tests/conftest.py
would both be imported as the top-level module ``conftest`` under --doctest-modules).

nbval waits only 5 s for a cell's output messages once the cell has finished; on a loaded
2-core machine a cell that draws several figures can take longer to deliver them, and the
cell then fails although it ran. Give it a minute.

nbval also reads a kernel's output only after the cell has finished, and the kernel's IOPub
socket drops messages past its high-water mark (1,000): a long cell whose progress bars redraw
ten times a second overflows it, its final "idle" message is lost, and nbval times out waiting
for it. Kernels inherit this process's environment, so bars here redraw at most every 30 s.
"""

import os

os.environ.setdefault("TQDM_MININTERVAL", "30")

OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
