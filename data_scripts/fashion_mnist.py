"""Same as `obstruct data fetch NAME ARGS`, for `python data_scripts/NAME.py ARGS` (the fetchers are in the package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from obstructlib.data.fetchers import fetch_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(fetch_main("fashion_mnist", sys.argv[1:]))
