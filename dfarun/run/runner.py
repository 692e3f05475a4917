"""`run(cfg)`: validate, skip finished seeds, load data, train the rest stacked, write records."""
from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dfarun.config import schema as config
from dfarun.run import provenance
from dfarun.run import store
from dfarun.config.schema import conv_dropout, effective_lr, epoch_limit, resolve_device, row_label
from dfarun.config.checks import validate
from dfarun.engine.conv import ConvArch
from dfarun.engine.data import Data, load
from dfarun.errors import check_folder, interrupted
from dfarun.engine.nets import MLPArch, layer_sizes
from dfarun.engine.rules import RULES
from dfarun.engine.state import State, init_state
from dfarun.run.progress import Reporter, job_tag
from dfarun.engine.step import Step
from dfarun.engine.train import Protocol, SeedResult, fit
from dfarun.engine.whiten import CACHE_DIR, whiten

log = logging.getLogger("dfarun")


def run(cfg: DictConfig) -> list[dict]:
    """Train every seed of `cfg` that has no record yet; return all of its seeds' records.

    Jobs sharing a store coordinate through locks (store.py): this job trains only the seeds it
    has locked; a seed that another live job is training is waited for and its record read (if
    that job dies instead, this one trains the seed). Two identical jobs run one after the other."""
    validate(cfg)
    store.check_store(cfg)
    with job_tag(cfg, f"{cfg.dataset.name} {row_label(cfg)} {cfg.method.name}"):
        return _run(cfg)


def _run(cfg: DictConfig) -> list[dict]:
    device = resolve_device(cfg.device)
    seeds = list(cfg.seeds)
    ckpt = store.checkpoint_path(cfg)
    # force=true replaces the records written before it began: not those another job writes
    # meanwhile, nor those this forced job wrote before it was stopped (store.force_began)
    began = store.force_began(cfg) if cfg.force else None
    stale = {s: stamp for s in seeds if (stamp := _stamp(store.record_path(cfg, s))) and stamp[1] < began} \
        if cfg.force else {}
    done = _finished(cfg, seeds, stale)
    if done:
        log.info(f"skipping seeds {sorted(done)}: records exist in {cfg.store}/ (force=true retrains)")
        weightless = [s for s in sorted(done) if not store.record_path(cfg, s).with_suffix(".pt").exists()]
        if cfg.save_weights and weightless:  # save_weights is no setting of the experiment: say so
            log.warning(f"save_weights=true: seeds {weightless} were trained without it and have no weights; "
                        "force=true retrains them and saves them")
    if (stack := seed_stack(cfg, device)) < len(seeds) - len(done):
        why = "" if cfg.seed_stack is not None else " (seed_stack=null: conv seeds do not gain from stacking on a CPU)"
        log.info(f"training at most {stack} seed{'s' * (stack > 1)} at a time{why}")
    if len(done) < len(seeds) or ckpt.exists():
        # the data first: a missing or corrupt file stops the job before it writes anything
        data = _data(cfg, device) if len(done) < len(seeds) else None
        check_folder("store", cfg.store, "the run records can be written to")
        if began is not None:
            store.note_force(cfg, began)
        job = store.acquire(store.job_lock(cfg), wait=False)
        if job is None:
            log.info(f"waiting: an identical job (same experiment and seeds) is running on {cfg.store}/")
            job = store.acquire(store.job_lock(cfg), wait=True)
        # one per job: every seed_stack pass reuses its compiled graph
        step = Step(cfg.compile, device) if len(done) < len(seeds) else None
        try:
            while todo := [s for s in seeds if s not in done]:
                done.update(_round(cfg, todo, data, device, stale, step, began))
            store.drop_checkpoint(ckpt)  # left by a killed run of this job whose seeds others finished
        finally:
            job.release()
    # lock files of a job killed after its last record: nobody would take those locks again
    store.drop_stale_locks([store.job_lock(cfg), *(store.seed_lock(cfg, s) for s in seeds)])
    # every seed is done (a rerun without force=true may have finished a stopped forced job):
    # a later force=true is a new job
    store.drop_force_note(cfg)
    return [done[s] for s in seeds]


def _round(cfg: DictConfig, todo: list[int], data: Data, device: torch.device, stale: dict, step: Step | None,
           began: int | None) -> dict[int, dict]:
    """Lock the seeds of `todo` no other job is training (when all are taken, wait for the first)
    and train at most seed_stack of them (or all that a checkpoint resumes), releasing the rest
    at once; return the records this round produced or found."""
    locks = _lock(cfg, todo, wait=False)
    if not locks:
        log.info(f"waiting for seeds {todo}: another job is training them; their records are read when it ends")
        locks = _lock(cfg, todo[:1], wait=True)
    try:
        done = _finished(cfg, list(locks), stale)  # finished by the job that held the lock before
        train = [s for s in locks if s not in done]
        for seed in train:  # temp files of a job killed while writing these records
            store.drop_temps(store.record_path(cfg, seed))
            store.drop_temps(store.record_path(cfg, seed).with_suffix(".pt"))
        resumable = [s for s in train if s in store.checkpoint_seeds(store.checkpoint_path(cfg), began)]
        # a killed run of this job trained these: resume them together (its one checkpoint holds
        # them all), the others next round; else at most seed_stack seeds, each result unchanged
        train = resumable or train[:seed_stack(cfg, device)]
        if not resumable:  # locked by this job, so no live job trains them: say what is passed over
            _say_not_resumed(cfg, train)
        for seed in [s for s in locks if s not in train]:  # free the rest for another job now
            locks.pop(seed).release()
        if train:
            done.update(_train(cfg, train, data, device, step, began))
        return done
    finally:
        for lock in locks.values():
            lock.release()


def _say_not_resumed(cfg: DictConfig, fresh: list[int]) -> None:
    """A checkpoint belongs to its job (the experiment and its seed list): one that a job with
    another seed list left holding some of `fresh` is named, not silently passed over."""
    for other in store.other_checkpoints(cfg):
        try:
            stamp = other.stat()
        except OSError:  # its job finished meanwhile
            continue
        if held := sorted(_seeds_in(other, stamp.st_mtime_ns, stamp.st_size) & set(fresh)):
            log.warning(f"not resuming seeds {held} from {other}: a job with another seed list made it; "
                        "that job's command resumes them (this one trains them from the start)")


@functools.lru_cache(maxsize=16)
def _seeds_in(path: Path, mtime_ns: int, size: int) -> frozenset[int]:
    """The seeds a checkpoint holds, read once per version of the file (not once per round)."""
    return frozenset(store.checkpoint_seeds(path))


def _lock(cfg: DictConfig, seeds: list[int], wait: bool) -> dict[int, store.Lock]:
    locks = {}
    for seed in seeds:
        if (lock := store.acquire(store.seed_lock(cfg, seed), wait)) is not None:
            locks[seed] = lock
    return locks


def _finished(cfg: DictConfig, seeds: list[int], stale: dict) -> dict[int, dict]:
    """The records of `seeds` on disk, less those force=true is replacing (`stale`)."""
    done = {}
    for seed in seeds:
        path = store.record_path(cfg, seed)
        stamp = _stamp(path)  # before reading: a record replaced in between then counts as stale
        if (rec := store.finished(path)) is not None and (seed not in stale or stamp != stale[seed]):
            done[seed] = rec
    return done


def _stamp(path: Path) -> tuple[int, int] | None:
    """(inode, mtime): a record rewritten by os.replace gets a new inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _data(cfg: DictConfig, device: torch.device) -> Data:
    """The data set on the device: split for validation and whitened as the config asks."""
    data = load(cfg.dataset, cfg.data_dir, device)
    if cfg.val:
        data = data.hold_out(config.VAL_SIZE)
    if whitened(cfg):  # fitted on what is trained on: the validation images stay unseen
        cache = None if cfg.dataset.name == "synthetic" else Path(cfg.data_dir).expanduser() / CACHE_DIR
        data = whiten(data, cfg.dataset.zca_eps, cache, cfg.dataset.name)
    return data


def _train(cfg: DictConfig, seeds: list[int], data: Data, device: torch.device, step: Step | None,
           began: int | None = None) -> dict[int, dict]:
    """Train `seeds` together (resuming this job's checkpoint where there is one) and write
    their records; `began`: when the force=true job this is part of began (None: no force)."""
    rule = RULES[cfg.method.name]
    protocol = Protocol(lr=effective_lr(cfg), batch_size=cfg.batch_size, max_epochs=epoch_limit(cfg),
                        schedule=cfg.schedule, halve_every=cfg.halve_every,
                        p_input=cfg.reg.p_input, p_hidden=cfg.reg.p_hidden,
                        p_conv=conv_dropout(cfg), eps=cfg.reg.eps, compile=cfg.compile,
                        align_every=cfg.align_every if cfg.track_alignment else 0,
                        freeze_first=cfg.freeze_first_epochs)
    ckpt = store.checkpoint_path(cfg)
    state = _resume(ckpt, seeds, device, began)
    if state is None:
        state = init_state(seeds, architecture(cfg, data), cfg.model.activation, rule, device,
                           cfg.rmsprop_init)
    log.info(f"{cfg.dataset.name} {row_label(cfg)} {cfg.method.name}: seeds {state.seeds} on {device}, "
             f"lr {protocol.lr:g}, batch {cfg.batch_size}, at most {protocol.max_epochs} epochs")
    started = time.time()
    context = provenance.context(cfg, device, len(seeds), row_label(cfg))
    records = {}
    reporter = None

    def finish(result: SeedResult) -> None:
        records[result.seed] = rec = provenance.record(context, result, time.time() - started)
        path = store.record_path(cfg, result.seed)
        if cfg.save_weights:  # first, so a record never points at weights that are not there
            store.save_weights(path.with_suffix(".pt"), result.net)
        store.write(path, rec)
        reporter.final(result, rec)

    try:
        reporter = Reporter(cfg, state.seeds, state.history, state.epoch, protocol.lr)
        fit(state, data, rule, protocol, on_final=finish, on_rows=reporter.rows, on_step=reporter.step,
            on_epoch=lambda s: store.save_checkpoint(ckpt, s.to_dict() | {store.FORCED: began}) if s.seeds else None,
            step=step)
    finally:
        if reporter is not None:  # closes whatever writers it opened
            reporter.close()
    store.drop_checkpoint(ckpt)
    log.info(f"records: {store.record_path(cfg, seeds[0]).parent}/")
    return records


def _resume(path: Path, seeds: list[int], device: torch.device, began: int | None = None) -> State | None:
    """The job's last epoch checkpoint, cut to `seeds`, or None to start afresh (always, under
    force=true, unless the forced job that began at `began` wrote it)."""
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


def whitened(cfg: DictConfig) -> bool:
    """whiten=null means the paper's choice: ZCA for the conv nets, [0, 1] pixels for MLPs."""
    return bool(cfg.model.channels) if cfg.whiten is None else cfg.whiten


def architecture(cfg: DictConfig, data: Data) -> MLPArch | ConvArch:
    m, classes = cfg.model, cfg.dataset.classes
    if m.channels:
        return ConvArch(data.shape, tuple(m.channels), (m.width,) * m.depth, classes, m.kernel,
                        m.pool, m.pool_stride)
    return MLPArch(tuple(layer_sizes(data.features, m.depth, m.width, classes)))
