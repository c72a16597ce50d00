"""`python data_scripts/cc3m.py ARGS` runs `obstruct data fetch cc3m ARGS` (the fetcher is in the package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from obstructlib.data.fetchers import fetch_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(fetch_main("cc3m", sys.argv[1:]))
