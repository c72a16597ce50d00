"""engine.ResumableLoop: the one loop skeleton every trainer uses."""

from __future__ import annotations

import torch
from torch import nn

from obstructlib.engine import ResumableLoop, has_checkpoint, load_checkpoint


def _run(ckpt, total=5, stop_at=None, every=2, saved=None):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"count": 0}
    loop = ResumableLoop(total, ckpt_dir=ckpt, model=model, optimizer=opt, history={"unit": []}, every=every,
                         extra=lambda: {"count": state["count"]},
                         on_saved=None if saved is None else lambda: saved.append(loop.unit))
    state["count"] = loop.resumed.get("count", 0)
    for unit in loop:
        loss = model(torch.full((4, 3), float(unit))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["count"] += 1
        loop.log(unit=unit)
        if unit == stop_at:
            loop.stop()
    return model, loop, state


def test_stop_checkpoints_and_the_next_call_resumes_where_it_stopped(tmp_path):
    saved: list[int] = []
    _, loop, _ = _run(tmp_path / "c", stop_at=2, saved=saved)
    assert loop.stopped and loop.history == {"unit": [0, 1, 2]}
    assert saved == [2, 3]  # every=2 after unit 2 (index 1), then the stop after unit 3 (index 2)
    model, loop, state = _run(tmp_path / "c")
    assert loop.start == 3 and loop.history == {"unit": [0, 1, 2, 3, 4]} and state["count"] == 5
    full, _, _ = _run(None)
    assert torch.equal(model.weight, full.weight)  # a resumed run ends where an uninterrupted one does
    assert load_checkpoint(tmp_path / "c")["step"] == 5


def test_without_a_checkpoint_dir_nothing_is_saved_and_stop_before_the_first_unit_runs_none(tmp_path):
    _, loop, _ = _run(None, total=3)
    assert loop.history == {"unit": [0, 1, 2]} and not has_checkpoint(tmp_path)
    loop = ResumableLoop(3, ckpt_dir=tmp_path / "d", model=nn.Linear(1, 1), history=[])
    loop.stop()
    assert list(loop) == [] and not has_checkpoint(tmp_path / "d")
