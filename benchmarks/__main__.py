"""The one entry point of the benchmark suite: ``python -m benchmarks [NAME ...] [options]``.

NAME is ``throughput`` (the CLIP training step, ``clip_throughput.py``) or a protection pass
(``mem``, ``mem-em``, ``em``, ``tap``, ``uc``, ``ntp``, ``ubt``, ``lto``: see ``passes.py``);
none means all. Every record is one JSON line on stdout and, with ``--out``, appended to a file;
a Markdown table of the records follows, and ``--readme`` writes it into ``benchmarks/README.md``
between its ``bench:passes`` markers.

Examples::

    python -m benchmarks --scale smoke                       # seconds: what make test runs
    OMP_NUM_THREADS=2 python -m benchmarks mem em tap --scale cpu --out benchmarks/results/cpu.jsonl
    python -m benchmarks --scale gpu --device cuda --out gpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks.passes import PASSES, SCALES, build, environment, measure

README = Path(__file__).with_name("README.md")
MARKERS = ("<!-- bench:passes:start -->", "<!-- bench:passes:end -->")
REPEATS = {"smoke": 1, "cpu": 5, "gpu": 10}
THROUGHPUT = {"smoke": ("tiny-vit", 4, 1, 0), "cpu": ("tiny-vit", 128, 10, 2), "gpu": ("ViT-B-32", 256, 20, 5)}


def throughput(scale: str, device: torch.device) -> dict[str, Any]:
    """``clip_throughput.py``'s record for the scale's model and batch."""
    from benchmarks.clip_throughput import benchmark

    arch, batch, steps, warmup = THROUGHPUT[scale]
    record = benchmark(arch, batch, device, steps=steps, warmup=warmup, amp=True, image_size=None,
                       flops=device.type == "cuda")
    return {"bench": "throughput", "name": "throughput", **record}


def markdown(records: list[dict[str, Any]]) -> str:
    """The pass records as a Markdown table: one row per pass and label, repeated runs as mean and spread.

    Records of the same pass, label and setting (repeated runs, e.g. three calls appending to one
    file) form one row: the ratio as ``mean +- sd (n runs)``, the other columns as means.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("bench") == "pass":
            key = (r["name"], r.get("label", ""), r.get("scale", ""), r.get("device_name", ""),
                   json.dumps(r["setting"], sort_keys=True))
            groups.setdefault(key, []).append(r)
    rows = ["| pass | label | setting | schedule | wall s | ideal s | ratio | passes | train step ms | "
            "ratio_steps | device |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rs in groups.values():
        r, n = rs[0], len(rs)

        def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.fmean(x[key] for x in rs)

        ratio = f"**{mean('ratio'):.2f}**" + (f" +- {statistics.stdev(x['ratio'] for x in rs):.2f} ({n} runs)"
                                             if n > 1 else "")
        s = r["setting"]
        setting = f"{s.get('profile', '')} {s.get('arch', '')} {s.get('image_size', '')} px, batch {s.get('batch', '')}"
        rows.append(f"| {r['name']} | {r.get('label', '')} | {setting} | {r['schedule']} | {mean('wall_s'):.2f} | "
                    f"{mean('ideal_s'):.2f} | {ratio} | {r['passes']:g} | {mean('train_step_ms'):.1f} | "
                    f"{mean('ratio_steps'):.2f} | {r['device_name']} x{r['threads']} |")
    return "\n".join(rows)


def write_readme(table: str, readme: Path = README) -> None:
    """Replace the table between the ``bench:passes`` markers of ``readme`` (append the markers if absent)."""
    text = readme.read_text() if readme.is_file() else ""
    block = f"{MARKERS[0]}\n{table}\n{MARKERS[1]}"
    if MARKERS[0] in text and MARKERS[1] in text:
        text = re.sub(re.escape(MARKERS[0]) + r".*?" + re.escape(MARKERS[1]), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"throughput, {', '.join(PASSES)} (default: all)")
    parser.add_argument("--scale", choices=SCALES, default="cpu")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    parser.add_argument("--label", default="", help="a label stored in every record (e.g. before/after)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls of each unit (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--from", dest="inputs", type=Path, nargs="*", default=(),
                        help="render these JSON-lines files instead of measuring")
    parser.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n != "throughput" and n not in PASSES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: use throughput, {', '.join(PASSES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    records: list[dict[str, Any]] = []
    if args.inputs:
        for path in args.inputs:
            if not path.is_file():
                parser.error(f"--from {path}: no such file (give the JSON-lines file a run wrote with --out)")
            try:
                records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                parser.error(f"--from {path}: not a JSON-lines file ({e}); give the file a run wrote with --out")
        order = {name: i for i, name in enumerate(PASSES)}  # each pass's rows together, in file order
        records.sort(key=lambda r: order.get(r.get("name", ""), len(order)))
    else:
        device = torch.device(args.device)
        failed = 0
        for name in args.names or ["throughput", *PASSES]:
            try:
                if name == "throughput":
                    record = throughput(args.scale, device)
                else:
                    record = measure(build(name, args.scale, device), device,
                                     args.repeats or REPEATS[args.scale])
            except Exception as e:  # one failing benchmark must not lose the others' figures
                failed += 1
                traceback.print_exc()
                record = {"bench": "error", "name": name, "error": f"{type(e).__name__}: {e}", **environment(device)}
            record.update(scale=args.scale, label=args.label)
            records.append(record)
            line = json.dumps(record)
            print(line, flush=True)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.open("a") as f:
                    f.write(line + "\n")
        if failed:
            print(f"{failed} benchmark(s) failed: see the tracebacks above", file=sys.stderr)
    table = markdown(records)
    print(table)
    if args.readme:
        write_readme(table)
    return 1 if any(r.get("bench") == "error" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
