"""Download a CC3M subset with img2dataset and write ROOT/cc3m/captions.csv (image,caption)."""

from __future__ import annotations

import csv
import random
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ._common import FetchError, already_present, make_parser, manual_step, run_script, say

DESCRIPTION = """\
Fetch a subset of Conceptual Captions 3M (Sharma et al., ACL 2018) with img2dataset.

CC3M is distributed as a TSV of (caption, url) pairs: get Train_GCC-training.tsv (500 MB, 3.3M
rows) from https://ai.google.com/research/ConceptualCaptions/download after accepting its terms,
and pass it as --tsv. This script
  1. writes the first (or, with --pick random, a seeded random) --num-samples rows to
     ROOT/cc3m/subset.tsv,
  2. runs img2dataset (pip install img2dataset) with --output_format files into
     ROOT/cc3m/images/ (shard folders of NNNNNNNNN.jpg/.txt/.json); the command is printed,
     and --print-only stops there so you can run it yourself,
  3. converts that folder into ROOT/cc3m/captions.csv with columns image,caption (image paths
     relative to the CSV). --convert-only does step 3 alone on an existing folder.
Many URLs are dead by now: expect roughly 60-80% of the rows to download.
Size: about 15 KB per image at --image-size 256 (10,000 samples: about 150 MB).
Licence: captions and URLs may be used freely (Google); each image belongs to its owner.
Writes: ROOT/cc3m/captions.csv and ROOT/cc3m/images/.
"""


def write_subset(tsv: Path, out: Path, num_samples: int, pick: str = "first", seed: int = 0) -> int:
    """Copy ``num_samples`` (caption, url) rows of ``tsv`` into ``out`` with a header row.

    A first row whose second column is not a URL is taken as a header and skipped.
    ``pick="random"`` draws a seeded uniform sample (reservoir sampling, one pass).
    """
    rng = random.Random(seed)
    chosen: list[tuple[str, str]] = []
    with open(tsv, newline="", encoding="utf-8") as fh:
        seen = 0
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 2 or not row[1].startswith(("http://", "https://")):
                continue
            if pick == "first":
                if len(chosen) == num_samples:
                    break
                chosen.append((row[0], row[1]))
            else:
                seen += 1
                if len(chosen) < num_samples:
                    chosen.append((row[0], row[1]))
                elif (j := rng.randrange(seen)) < num_samples:
                    chosen[j] = (row[0], row[1])
    if not chosen:
        raise FetchError(f"{tsv} has no (caption, url) rows: give the CC3M TSV (caption<TAB>url)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        writer.writerow(["caption", "url"])
        writer.writerows((c.replace("\t", " "), u) for c, u in chosen)
    return len(chosen)


def img2dataset_command(
    subset: Path, images_dir: Path, image_size: int = 256, processes: int = 4, threads: int = 32
) -> list[str]:
    """The img2dataset command line that downloads ``subset`` into ``images_dir`` as plain files."""
    return [
        "img2dataset",
        f"--url_list={subset}",
        "--input_format=tsv",
        "--url_col=url",
        "--caption_col=caption",
        "--output_format=files",
        f"--output_folder={images_dir}",
        f"--image_size={image_size}",
        "--resize_mode=keep_ratio",
        f"--processes_count={processes}",
        f"--thread_count={threads}",
        "--incremental_mode=incremental",
        "--enable_wandb=False",
    ]


def convert_img2dataset_output(images_dir: Path, csv_path: Path) -> int:
    """Write ``csv_path`` (image,caption) from an img2dataset ``--output_format files`` folder.

    Every ``<shard>/<key>.jpg`` with a non-empty ``<key>.txt`` beside it becomes one row; the
    image path is relative to the CSV's folder. Rows are sorted by path, so the CSV is the same
    on every run.

    Returns:
        The number of rows written.
    """
    rows = []
    for image in sorted(images_dir.glob("*/*.jpg")):
        caption_file = image.with_suffix(".txt")
        if not caption_file.exists():
            continue
        caption = " ".join(caption_file.read_text(encoding="utf-8").split())
        if caption:
            rows.append((image.relative_to(csv_path.parent).as_posix(), caption))
    if not rows:
        raise FetchError(
            f"no image/caption pairs under {images_dir}: did img2dataset run (--output_format files)?"
        )
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    tmp.replace(csv_path)
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("cc3m", DESCRIPTION)
    parser.add_argument(
        "--tsv", metavar="PATH", help="the CC3M TSV (caption<TAB>url), e.g. Train_GCC-training.tsv"
    )
    parser.add_argument("--num-samples", type=int, default=10000, help="rows to download (default 10000)")
    parser.add_argument(
        "--pick", choices=("first", "random"), default="first", help="which rows (default first)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --pick random")
    parser.add_argument("--image-size", type=int, default=256, help="img2dataset --image_size (default 256)")
    parser.add_argument("--processes", type=int, default=4, help="img2dataset --processes_count")
    parser.add_argument("--threads", type=int, default=32, help="img2dataset --thread_count")
    parser.add_argument("--print-only", action="store_true", help="write the subset, print the command, stop")
    parser.add_argument(
        "--convert-only", action="store_true", help="only convert ROOT/cc3m/images/ to captions.csv"
    )
    args = parser.parse_args(argv)
    folder = Path(args.root) / "cc3m"
    csv_path, images_dir, subset = folder / "captions.csv", folder / "images", folder / "subset.tsv"
    if already_present("cc3m", [csv_path], csv_path):
        return 0
    if not args.convert_only:
        if not args.tsv:
            manual_step(
                "CC3M needs its (caption, url) TSV, which Google serves only after you accept its terms:\n"
                "  1. download Train_GCC-training.tsv from https://ai.google.com/research/ConceptualCaptions/download\n"
                f"  2. run: obstruct data fetch cc3m --root {args.root} --tsv Train_GCC-training.tsv"
                " --num-samples 10000"
            )
        count = write_subset(Path(args.tsv), subset, args.num_samples, args.pick, args.seed)
        say(f"cc3m: wrote {count} rows to {subset}")
        command = img2dataset_command(subset, images_dir, args.image_size, args.processes, args.threads)
        say("cc3m: img2dataset command:\n  " + shlex.join(command))
        if args.print_only:
            return 0
        executable = shutil.which("img2dataset") or shutil.which(
            "img2dataset", path=str(Path(sys.executable).parent)
        )
        if executable is None:
            manual_step(
                f"img2dataset is not installed: run `{sys.executable} -m pip install img2dataset`, "
                "then this command again (or run the command above yourself and then add --convert-only)"
            )
        command[0] = executable
        if subprocess.run(command, check=False).returncode != 0:
            raise FetchError(
                "img2dataset failed (see its output above): fix it and re-run; finished shards are kept"
            )
    count = convert_img2dataset_output(images_dir, csv_path)
    say(f"cc3m: wrote {count} image/caption pairs to {csv_path}")
    return 0


if __name__ == "__main__":
    run_script(main)
