"""What a person, and the disk, see while a job trains.

`Reporter` takes what train.fit hands out and
  - prints each epoch's line with the clock time and a bound on the time left, and the time the
    step took to compile on a line of its own (kept out of the epoch's time and the bound),
  - appends each seed's history row to `<store>/live/<record name>.jsonl` the moment it is
    computed, so a running or killed job's progress can be read from its store (dfarun-tables
    and dfarun-figures read only the final `*.json` records, never these),
  - writes TensorBoard scalars under `<store>/tensorboard/` when `logger=tensorboard`,
  - prints a seed's final line the moment that seed is final,
  - shows progress inside long epochs: a tqdm bar on a terminal, a line every 30 s otherwise.
`job_tag` prefixes every line of a job with its name when a sweep (-m) runs several jobs,
which the joblib launcher interleaves on one terminal.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

from omegaconf import DictConfig

from dfarun.run import store
from dfarun.engine.train import SeedResult, compile_line, epoch_line

log = logging.getLogger("dfarun")

QUIET_SECONDS = 30.0  # without a terminal: one progress line per this much time inside an epoch


# --- the reporter --------------------------------------------------------------------------------

class Reporter:
    """One per training round of a job; `rows`, `step` and `final` are train.fit's callbacks."""

    def __init__(self, cfg: DictConfig, seeds: list[int], histories: list[list[dict]], epoch: int,
                 lr: float):
        self.lr = lr
        self.started, self.first_epoch = time.monotonic(), epoch  # epochs before this are resumed
        self.compiling = 0.0  # seconds the step spent compiling: no guide to the epochs to come
        self.epoch_start = time.monotonic()
        self.bar, self.last_line = None, time.monotonic()
        self.tty = sys.stderr.isatty()  # asked once: step() runs every mini-batch
        self.live = {s: store.live_path(cfg, s) for s in seeds}
        for seed, history in zip(seeds, histories):  # a resumed job rewrites what its checkpoint holds
            store.write_lines(self.live[seed], history)
        self.writers = {}
        if cfg.logger.name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter  # config validation checked it imports
            try:
                for seed in seeds:  # purge_step drops events a killed run wrote after its checkpoint
                    self.writers[seed] = SummaryWriter(str(store.tensorboard_dir(cfg, seed)), purge_step=epoch + 1)
            except BaseException:
                self.close()
                raise

    def step(self, done: int, total: int) -> None:
        """Inside an epoch: a bar on a terminal; elsewhere a line every QUIET_SECONDS."""
        now = time.monotonic()
        if done == 1:
            self.epoch_start = self.last_line = now
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=total, leave=False, unit="batch", file=sys.stderr, mininterval=0.5)
            self.bar.update(1)
            if done == total:
                self.bar.close()
                self.bar = None
        elif now - self.last_line >= QUIET_SECONDS and done < total:
            self.last_line = now
            log.info(f"{_clock()} ... {100 * done / total:.0f}% of the epoch ({done}/{total} mini-batches, "
                     f"{now - self.epoch_start:.0f} s)")

    def rows(self, epoch: int, rows: dict[int, dict], max_epochs: int) -> None:
        for seed, row in rows.items():
            with open(self.live[seed], "a") as f:
                f.write(store.json_line(row))
            if seed in self.writers:
                self._scalars(self.writers[seed], row)
        if line := compile_line(list(rows.values())):
            self.compiling += next(iter(rows.values()))["compile_seconds"]
            log.info(f"{_clock()} {line}")
        per_epoch = (time.monotonic() - self.started - self.compiling) / (epoch - self.first_epoch)
        left = _duration((max_epochs - epoch) * max(per_epoch, 0.0))
        log.info(f"{_clock()} {epoch_line(epoch, max_epochs, list(rows.values()))}"
                 + (f"  ≤ {left} left" if epoch < max_epochs else ""))

    def final(self, result: SeedResult, record: dict) -> None:
        log.info(f"{_clock()} seed {result.seed}: {result.stop} after {record['epochs']} epochs, "
                 f"train {_pct(record['train_error'])}, test {_pct(record['test_error'])} "
                 f"({_duration(record['wall_seconds'])})")
        if (writer := self.writers.pop(result.seed, None)) is not None:
            writer.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        for writer in self.writers.values():
            writer.close()

    def _scalars(self, writer, row: dict) -> None:
        epoch = row["epoch"]
        for key, value in row.items():
            if key.endswith("_error") or key.endswith("_loss"):
                writer.add_scalar(key.replace("_", "/", 1), value, epoch)  # train/error, test/error, ...
        writer.add_scalar("lr", row.get("lr", self.lr), epoch)
        for key in ("align_signal", "align_update"):  # degrees, one per hidden layer
            for layer, angle in enumerate(row.get(key, []), start=1):
                writer.add_scalar(f"{key}/layer{layer}", angle, epoch)


# --- naming a job's lines --------------------------------------------------------------------------

class _Prefix(logging.Filter):
    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.tag} {record.msg}"
        return True


@contextlib.contextmanager
def job_tag(cfg: DictConfig, name: str) -> Iterator[None]:
    """While a job of a sweep runs, its lines start with [#job name]; a single run's do not."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    prefix = _Prefix(f"[#{HydraConfig.get().job.num} {name}]")
    log.addFilter(prefix)
    try:
        yield
    finally:
        log.removeFilter(prefix)


# --- formatting ----------------------------------------------------------------------------------

def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}%"
