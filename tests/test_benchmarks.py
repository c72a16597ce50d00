"""The benchmark suite runs in seconds-long smoke mode, so a renamed function breaks the tests, not the user."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import MARKERS, main, markdown, write_readme
from benchmarks.passes import PASSES, Pass, Work, finite, measure


def test_every_pass_and_the_throughput_run_in_smoke_mode(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    assert main(["--scale", "smoke", "--out", str(out), "--label", "test"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in records] == ["throughput", *PASSES]
    for r in records[1:]:
        assert r["bench"] == "pass" and finite(r), r
        assert r["work"] and all(w["count"] > 0 and w["ms"] > 0 for w in r["work"]), r["name"]
        assert r["label"] == "test" and r["scale"] == "smoke"
    assert records[0]["images_per_s"] > 0
    table = capsys.readouterr().out
    assert all(f"| {name} | test |" in table for name in PASSES)


def test_ratio_is_wall_time_over_the_counted_work(tmp_path):
    import time

    import torch

    def unit() -> None:
        time.sleep(0.01)

    p = Pass(name="toy", schedule="3 units", run=lambda: [unit() for _ in range(6)],
             work=[Work("sleep 10 ms", 3, unit)], train_step=unit)
    r = measure(p, torch.device("cpu"), repeats=3)
    # the pass does twice the work its schedule counts: ratio 2, ratio_steps 2 (3 passes of 10 ms)
    assert r["ratio"] == pytest.approx(2.0, rel=0.25) and r["ratio_steps"] == pytest.approx(2.0, rel=0.25)


def test_readme_table_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    record = {"bench": "pass", "name": "mem", "label": "after", "setting": {"profile": "quick", "arch": "tiny-rn",
              "image_size": 32, "batch": 64}, "schedule": "1 round", "wall_s": 2.0, "ideal_s": 1.8, "ratio": 1.11,
              "passes": 10, "train_step_ms": 180.0, "ratio_steps": 1.1, "device_name": "x86_64", "threads": 1}
    write_readme(markdown([record]), readme)
    write_readme(markdown([record, {**record, "label": "before", "ratio": 1.5}]), readme)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and text.count(MARKERS[0]) == 1
    assert "| mem | before |" in text and "**1.50**" in text


def test_unknown_names_and_bad_input_files_are_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["nosuchpass", "--scale", "smoke"])
    assert e.value.code == 2 and "unknown benchmark nosuchpass" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--from", str(tmp_path / "missing.jsonl")])
    assert e.value.code == 2 and "no such file" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(SystemExit) as e:
        main(["--from", str(tmp_path / "bad.jsonl")])
    assert e.value.code == 2 and "not a JSON-lines file" in capsys.readouterr().err
