"""`python data_scripts/flickr8k.py ARGS` runs `obstruct data fetch flickr8k ARGS` (the fetcher is in the package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without `pip install`
from obstructlib.data.fetchers import fetch_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(fetch_main("flickr8k", sys.argv[1:]))
