"""A job as the run layer sees it: one experiment (its key, record paths and checkpoint), the
seeds asked for, what force=true replaces, and the locks that let many jobs share one store.

`Job.of(cfg)` builds it once; the runner (runner.py) then only loads, trains and records. The
bookkeeping lives here: force=true's stamps (which records it replaces, which checkpoint is its
own: store.force_began), which seeds this job may train now (locks.py), checkpoints another
job left, what the job resumes, and the clean-up once every seed is done.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig

from dfarun.config.schema import resolve_device
from dfarun.engine.nets import Network
from dfarun.engine.state import State
from dfarun.errors import check_folder, interrupted
from dfarun.run import siblings, store

log = logging.getLogger("dfarun")


@dataclass(frozen=True)
class Job:
    cfg: DictConfig
    key: str                     # the experiment (store.experiment_key)
    seeds: list[int]             # as asked for, in order
    records: dict[int, Path]     # seed -> its record's path
    checkpoint: Path             # this job's (experiment + seed list): what a rerun resumes
    device: torch.device
    stack: int                   # most seeds one pass trains (seed_stack)
    began: int | None            # force=true: when this forced job began (time_ns); None: no force
    stale: dict[int, tuple[int, int]]  # force=true: (inode, mtime) of the records it replaces

    @classmethod
    def of(cls, cfg: DictConfig) -> Job:
        device, seeds = resolve_device(cfg.device), list(cfg.seeds)
        records = {s: store.record_path(cfg, s) for s in seeds}
        # force=true replaces the records written before it began: not those another job writes
        # meanwhile, nor those this forced job wrote before it was stopped (store.force_began)
        began = store.force_began(cfg) if cfg.force else None
        stale = {s: stamp for s, path in records.items()
                 if began is not None and (stamp := _stamp(path)) and stamp[1] < began}
        return cls(cfg, store.experiment_key(cfg), seeds, records, store.checkpoint_path(cfg), device,
                   seed_stack(cfg, device), began, stale)

    # --- what is done ----------------------------------------------------------------------------

    def finished(self, seeds: list[int]) -> dict[int, dict]:
        """The records of `seeds` on disk, less those force=true is replacing."""
        done = {}
        for seed in seeds:
            stamp = _stamp(self.records[seed])  # before reading: a record replaced in between counts as stale
            if (rec := store.finished(self.records[seed])) is not None and self.stale.get(seed) != stamp:
                done[seed] = rec
        return done

    def explain(self, done: dict[int, dict]) -> None:
        """Say what this job skips, that it starts a new experiment (and why), and how it splits."""
        cfg = self.cfg
        if done:
            log.info(f"skipping seeds {sorted(done)}: records exist in {cfg.store}/ (force=true retrains)")
            weightless = [s for s in sorted(done) if not self.records[s].with_suffix(".pt").exists()]
            if cfg.save_weights and weightless:  # save_weights is no setting of the experiment: say so
                log.warning(f"save_weights=true: seeds {weightless} were trained without it and have no weights; "
                            "force=true retrains them and saves them")
        elif not siblings.own_records(cfg) and (why := _why_new(cfg)):
            log.info(f"{why}: a new experiment, trained from scratch")
        if self.stack < len(self.seeds) - len(done):
            why = "" if cfg.seed_stack is not None else \
                " (seed_stack=null: conv seeds do not gain from stacking on a CPU)"
            log.info(f"training at most {self.stack} seed{'s' * (self.stack > 1)} at a time{why}")

    # --- this job's turn, and the seeds it trains ------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The job's turn on the store: it must be writable; force=true notes when it began (for a
        rerun); an identical job (same experiment and seeds) waits for the job lock. Once every
        seed is done, the checkpoint goes (left by a killed run whose seeds others finished)."""
        check_folder("store", self.cfg.store, "the run records can be written to")
        if self.began is not None:
            store.note_force(self.cfg, self.began)
        lock = store.acquire(store.job_lock(self.cfg), wait=False)
        if lock is None:
            log.info(f"waiting: an identical job (same experiment and seeds) is running on {self.cfg.store}/")
            lock = store.acquire(store.job_lock(self.cfg), wait=True)
        try:
            yield
            store.drop_checkpoint(self.checkpoint)
        finally:
            lock.release()

    @contextlib.contextmanager
    def claim(self, todo: list[int]) -> Iterator[tuple[dict[int, dict], list[int]]]:
        """(records found, seeds to train) for one pass: the seeds of `todo` no other job is
        training are locked (when all are taken, the first is waited for); of those, the ones this
        job's checkpoint holds train together, else at most `stack`; the rest are freed at once.
        The locks are held until the pass ends."""
        locks = self._lock(todo, wait=False)
        if not locks:
            log.info(f"waiting for seeds {todo}: another job is training them; their records are read when it ends")
            locks = self._lock(todo[:1], wait=True)
        try:
            done = self.finished(list(locks))  # finished by the job that held the lock before
            train = [s for s in locks if s not in done]
            for seed in train:  # temp files of a job killed while writing these records
                store.drop_temps(self.records[seed])
                store.drop_temps(self.records[seed].with_suffix(".pt"))
            # a killed run of this job trained these: resume them together (its one checkpoint holds
            # them all), the others next pass; else at most `stack` seeds, each result unchanged
            resumable = [s for s in train if s in store.checkpoint_seeds(self.checkpoint, self.began)]
            train = resumable or train[:self.stack]
            if not resumable:  # locked by this job, so no live job trains them: say what is passed over
                self._say_not_resumed(train)
            for seed in [s for s in locks if s not in train]:  # free the rest for another job now
                locks.pop(seed).release()
            yield done, train
        finally:
            for lock in locks.values():
                lock.release()

    def _lock(self, seeds: list[int], wait: bool) -> dict[int, store.Lock]:
        locks = {}
        for seed in seeds:
            if (lock := store.acquire(store.seed_lock(self.cfg, seed), wait)) is not None:
                locks[seed] = lock
        return locks

    def _say_not_resumed(self, fresh: list[int]) -> None:
        """A checkpoint belongs to its job (the experiment and its seed list): one that a job with
        another seed list left holding some of `fresh` is named, not silently passed over."""
        for other in store.other_checkpoints(self.cfg):
            try:
                stamp = other.stat()
            except OSError:  # its job finished meanwhile
                continue
            if held := sorted(_seeds_in(other, stamp.st_mtime_ns, stamp.st_size) & set(fresh)):
                log.warning(f"not resuming seeds {held} from {other}: a job with another seed list made it; "
                            "that job's command resumes them (this one trains them from the start)")

    # --- a pass: resume, checkpoint, records -----------------------------------------------------

    def resume(self, seeds: list[int]) -> State | None:
        return load_state(self.checkpoint, seeds, self.device, self.began)

    def save(self, state: State) -> None:
        """After each epoch: the seeds still training, stamped with the forced job they belong to."""
        if state.seeds:
            store.save_checkpoint(self.checkpoint, state.to_dict() | {store.FORCED: self.began})

    def write(self, rec: dict, net: Network | None, diff: str | None) -> None:
        """A final seed's files: its weights (save_weights=true) and the uncommitted changes to the
        code that trained it (provenance.Code.diff) first, so that a record never promises files
        that are not there; a diff an earlier run left beside the record goes."""
        path = self.records[rec["seed"]]
        if self.cfg.save_weights:
            store.save_weights(path.with_suffix(".pt"), net)
        store.write_diff(path.with_suffix(".diff"), diff)
        store.write(path, rec)

    def drop_checkpoint(self) -> None:
        store.drop_checkpoint(self.checkpoint)

    def close(self) -> None:
        """Every seed is done: lock files of a job killed after its last record go (nobody would
        take those locks again), and so does force=true's note (a later force=true is a new job;
        a rerun without force may have finished a stopped forced job)."""
        store.drop_stale_locks([store.job_lock(self.cfg), *(store.seed_lock(self.cfg, s) for s in self.seeds)])
        store.drop_force_note(self.cfg)


def load_state(path: Path, seeds: list[int], device: torch.device, began: int | None = None) -> State | None:
    """The last epoch checkpoint at `path`, cut to `seeds`, or None to start afresh (always,
    under force=true, unless the forced job that began at `began` wrote it)."""
    saved = store.load_checkpoint(path, began)
    if saved is None:
        return None
    try:
        state = State.from_dict({k: v for k, v in saved.items() if k != store.FORCED}, device)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        if interrupted(err):  # Ctrl-C inside torch's C++ code, not a foreign checkpoint
            raise
        log.warning(f"ignoring checkpoint {path}: not a training state of this version")
        return None
    if not set(seeds) <= set(state.seeds):
        log.warning(f"ignoring checkpoint {path}: it does not hold seeds {seeds}")
        return None
    if state.seeds != seeds:  # a seed finished after the checkpoint was written
        state = state.select([i for i, s in enumerate(state.seeds) if s in seeds])
    log.info(f"resuming seeds {state.seeds} after epoch {state.epoch} from {path}")
    return state


def seed_stack(cfg: DictConfig, device: torch.device) -> int:
    """How many seeds one pass trains. Stacked seeds share every kernel launch, which pays on
    a GPU and for MLPs on a CPU; but four stacked conv_tanh seeds trained 0.62-0.97x as many
    images/s in all as one seed alone on the 2-core CPU (`make bench` times both), so there
    they go one at a time."""
    if cfg.seed_stack is not None:
        return cfg.seed_stack
    return 1 if cfg.model.channels and device.type == "cpu" else len(cfg.seeds)


def _why_new(cfg: DictConfig) -> str | None:
    """The settings that make this experiment differ from the nearest one with records in the
    store (same data set, model and method), e.g. "max_epochs=20 (records exist with
    max_epochs=300)"; None when there is none."""
    # the fewest differences; among equals, the newest records (siblings' order)
    nearest = min(siblings.differing(cfg), key=len, default=None)
    if not nearest:
        return None
    shown = lambda v: v if isinstance(v, str) else json.dumps(v)
    ours = ", ".join(f"{k}={shown(mine)}" for k, (mine, _) in nearest.items())
    theirs = ", ".join(f"{k}={shown(other)}" for k, (_, other) in nearest.items())
    return f"{ours} (records exist with {theirs})"


@functools.lru_cache(maxsize=16)
def _seeds_in(path: Path, mtime_ns: int, size: int) -> frozenset[int]:
    """The seeds a checkpoint holds, read once per version of the file (not once per pass)."""
    return frozenset(store.checkpoint_seeds(path))


def _stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime): a record rewritten by os.replace gets a new inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns
