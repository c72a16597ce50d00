"""nbval settings for the course notebooks.

nbval waits only 5 s for a cell's output messages once the cell has finished; on a loaded
2-core machine a cell that draws several figures can take longer to deliver them, and the
cell then fails although it ran. Give it a minute.
"""

OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
