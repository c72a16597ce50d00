"""How class-wise is the noise of finished ``obstruct uc`` / ``obstruct mem`` runs?

For every run folder given, loads the stored noise (``checkpoints/store``) and the labels of the
training subset the run used (rebuilt from ``checkpoints/run.json``), and prints
:func:`obstructlib.metrics.noise_class_structure`: the share of the noise energy the class means
explain, and the held-out accuracy of a nearest-class-mean classifier that sees only the noise.

Usage: python benchmarks/noise_structure.py RUN_DIR [RUN_DIR ...] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from obstructlib.data import PerturbationStore, load_dataset, load_pairs, seeded_subset
from obstructlib.metrics import noise_class_structure


def _labels(fp: dict) -> np.ndarray:
    """Per-row labels of the training subset a run protected (the runner's own loading)."""
    if "mem.rounds" in fp:  # obstruct mem: one store row per pair
        pairs = load_pairs(fp["dataset"], None, "train", image_size=fp["image_size"],
                           max_samples=fp["max_train_samples"], captions_per_image=fp["captions_per_image"],
                           seed=fp["seed"], progress=False)
        if pairs.labels is None:
            raise SystemExit(f"{fp['dataset']} has no class labels: nothing to measure the noise against")
        return pairs.labels
    ds = load_dataset(fp["dataset"], None, "train", image_size=fp["image_size"], channels=3, progress=False)
    return np.asarray(seeded_subset(ds, fp["max_train_samples"], seed=fp["seed"]).labels)


def measure(run_dir: Path) -> dict:
    fp = json.loads((run_dir / "checkpoints" / "run.json").read_text())
    store_file = run_dir / "checkpoints" / "store" / "store.npy"
    if not store_file.is_file():
        raise SystemExit(f"{run_dir}: no finished protection (checkpoints/store/store.npy)")
    store = PerturbationStore.load(store_file)
    labels = _labels(fp)
    if store.num_samples != len(labels):
        raise SystemExit(
            f"{run_dir}: the store covers {store.num_samples} samples, the subset has {len(labels)}"
        )
    noise = np.concatenate([store.delta_for(np.arange(i, min(i + 1000, len(labels)))).numpy()
                            for i in range(0, len(labels), 1000)])
    return {"run": str(run_dir), "method": fp.get("method"), **noise_class_structure(noise, labels)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = [measure(r) for r in args.runs]
    print(f"{'run':40s} {'method':10s} {'between-class energy':>21s} {'centroid acc':>13s} {'chance':>7s}")
    for r in rows:
        print(f"{r['run'][-40:]:40s} {r['method']:10s} {r['between_class_energy']:21.3f} "
              f"{r['centroid_accuracy']:13.3f} {r['chance']:7.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
