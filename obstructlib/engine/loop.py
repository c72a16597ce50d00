"""One resumable loop skeleton for every trainer in the library.

Each trainer (classifier, CLIP, SimCLR, NTL, NTP's ADMM iterations, the EM and MEM rounds) is a
loop over *units* -- epochs, steps, rounds or iterations -- that must resume from a checkpoint and
end exactly where an uninterrupted run ends. :class:`ResumableLoop` owns that part once: it loads
the checkpoint (weights, optimizer, scheduler, RNG, history) before the first unit, yields the
units still to run, writes the checkpoint after a unit (every ``every`` units, at the last one and
when stopped), only on the main process of a distributed run, and stops when asked. The trainer
keeps only its own step::

    loop = ResumableLoop(cfg.epochs, ckpt_dir=ckpt_dir, model=model, optimizer=opt, config=cfg,
                         history={"epoch": [], "loss": []})
    for epoch in loop:
        loss = train_one_epoch(...)
        loop.log(epoch=epoch + 1, loss=loss)
        if callback(epoch + 1):
            loop.stop()          # checkpointed, then the loop ends; the next call resumes
    return loop.history

Anything else a trainer must carry across a resume (a noise file, ADMM's dual variables, a loss
window) goes through ``extra`` (a function called at every save, whose dict is stored beside the
history) and comes back as :attr:`ResumableLoop.resumed` (``{}`` on a fresh start).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from obstructlib.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from obstructlib.engine.distributed import barrier, is_main_process
from obstructlib.errors import ConfigError

History = dict[str, list[Any]] | list[Any]


class ResumableLoop:
    """Units ``start .. total - 1`` of a trainer, checkpointed and resumable.

    Args:
        total: number of units of the whole run (epochs, steps, rounds ...).
        ckpt_dir: checkpoint directory; None runs without checkpoints (``start`` is 0).
        model: what is saved and restored (any ``nn.Module``; a ``ModuleDict`` for several).
        optimizer: saved and restored with the model, or None.
        scheduler: likewise.
        config: the trainer's config (a dataclass or dict), stored for inspection.
        history: the empty history: a dict of lists (:meth:`log` appends each key) or a list
            (:meth:`log` appends the record); replaced by the checkpoint's on a resume.
        every: checkpoint after every ``every``-th unit (and always after the last one and on
            :meth:`stop`).
        extra: called at every save; its dict is stored with the checkpoint (keys other than
            ``history``) and returned as :attr:`resumed` by the next run.
        on_saved: called after every save (e.g. to delete the files the new checkpoint replaced).
        map_location: where the optimizer state is loaded first.
        progress: show a bar over the units.
        desc: the bar's label.

    Attributes:
        start: the first unit this call runs (the checkpoint's step on a resume, else 0).
        resumed: the ``extra`` dict of the checkpoint resumed from, ``{}`` on a fresh start.
        history: the history so far, including the units run before a resume.
        stopped: whether :meth:`stop` ended the loop.

    Example:
        >>> loop = ResumableLoop(3, ckpt_dir=None, model=nn.Linear(2, 1), history=[])
        >>> for unit in loop:
        ...     loop.log({"unit": unit})
        ...     if unit == 1:
        ...         loop.stop()
        >>> loop.history, loop.stopped
        ([{'unit': 0}, {'unit': 1}], True)
    """

    def __init__(
        self,
        total: int,
        *,
        ckpt_dir: str | os.PathLike | None,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        config: Any = None,
        history: History | None = None,
        every: int = 1,
        extra: Callable[[], dict[str, Any]] | None = None,
        on_saved: Callable[[], None] | None = None,
        map_location: str | torch.device = "cpu",
        progress: bool = False,
        desc: str | None = None,
    ) -> None:
        if every < 1:
            raise ConfigError(f"checkpoint every={every} units: use 1 or more")
        self.total, self.every = int(total), int(every)
        self.ckpt_dir, self.model, self.optimizer, self.scheduler = ckpt_dir, model, optimizer, scheduler
        is_instance = dataclasses.is_dataclass(config) and not isinstance(config, type)
        self.config = dataclasses.asdict(config) if is_instance else config
        self.history: History = history if history is not None else {}
        self._extra, self._on_saved, self.progress, self.desc = extra, on_saved, progress, desc
        self.start, self.resumed, self.stopped = 0, {}, False
        if has_checkpoint(ckpt_dir):
            assert ckpt_dir is not None
            meta = load_checkpoint(ckpt_dir, model, optimizer, scheduler, map_location=map_location)
            self.start = meta["step"]
            self.resumed = {k: v for k, v in meta["extra"].items() if k != "history"}
            self.history = meta["extra"].get("history", self.history)
        self.unit = self.start  # units done so far

    def __iter__(self) -> Iterator[int]:
        bar = tqdm(range(self.start, self.total), desc=self.desc, disable=not self.progress, leave=False)
        for unit in bar:
            if self.stopped:
                break
            yield unit
            self.unit = unit + 1
            if self.ckpt_dir is not None and (self.unit % self.every == 0 or self.unit == self.total
                                              or self.stopped):
                self.save()
            if self.stopped:
                break
        bar.close()

    def log(self, record: dict[str, Any] | None = None, /, **values: Any) -> None:
        """Append a record to the history (a dict of lists gets each key's value)."""
        record = {**(record or {}), **values}
        if isinstance(self.history, list):
            self.history.append(record)
            return
        for key, value in record.items():
            self.history.setdefault(key, []).append(value)

    def stop(self) -> None:
        """End the loop after the current unit, once its checkpoint is written (the next call resumes).

        Called before the first unit (e.g. a resumed run that had already converged), no unit runs.
        """
        self.stopped = True

    def save(self) -> None:
        """Write the checkpoint now (main process only; the other ranks wait at a barrier)."""
        if self.ckpt_dir is None:
            return
        if is_main_process():
            extra = {"history": self.history, **(self._extra() if self._extra is not None else {})}
            save_checkpoint(self.ckpt_dir, self.model, self.optimizer, self.scheduler, step=self.unit,
                            config=self.config, extra=extra)
            if self._on_saved is not None:
                self._on_saved()
        barrier()


__all__ = ["ResumableLoop"]
