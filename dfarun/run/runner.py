"""`run(cfg)`: validate, skip finished seeds, load data, train the rest stacked, write records;
return the job's metric (what Hydra's sweepers minimise). The job's bookkeeping (force=true,
locks, checkpoints) is job.py's; what a record holds, provenance.py's; where it goes, store.py's.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dfarun.config import schema as config
from dfarun.config.checks import validate
from dfarun.config.schema import conv_dropout, effective_lr, epoch_limit, row_label
from dfarun.engine.conv import ConvArch
from dfarun.engine.data import Data, load
from dfarun.engine.nets import MLPArch, layer_sizes
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import Step
from dfarun.engine.train import Protocol, SeedResult, fit
from dfarun.engine.whiten import CACHE_DIR, whiten
from dfarun.run import provenance
from dfarun.run.job import Job, seed_stack  # noqa: F401 (seed_stack: how many seeds a pass trains)
from dfarun.run.progress import Reporter, job_tag

log = logging.getLogger("dfarun")

DIVERGED = 100.0  # a diverged seed's error (%) in the metric: worse than any seed that ran


def run(cfg: DictConfig) -> float:
    """Train every seed of `cfg` that has no record yet; return the job's metric (`metric`)."""
    return metric(cfg, run_records(cfg))


def run_records(cfg: DictConfig) -> list[dict]:
    """Train every seed of `cfg` that has no record yet; return all of its seeds' records.

    Jobs sharing a store coordinate through locks (job.py): this job trains only the seeds it
    has locked; a seed that another live job is training is waited for and its record read (if
    that job dies instead, this one trains the seed). Two identical jobs run one after the other."""
    validate(cfg)
    with job_tag(cfg, f"{cfg.dataset.name} {row_label(cfg)} {cfg.method.name}"):
        job = Job.of(cfg)
        done = job.finished(job.seeds)
        job.explain(done)
        left = len(done) < len(job.seeds)
        if left or job.checkpoint.exists():
            data = load_data(cfg, job.device) if left else None  # first: a bad file stops the job before it writes
            with job.running():
                step = Step(cfg.compile, job.device) if left else None  # one per job: passes reuse its graph
                while todo := [s for s in job.seeds if s not in done]:
                    with job.claim(todo) as (found, train):  # the seeds this pass holds locked
                        done |= found  # records another job wrote meanwhile
                        if train:
                            done |= _train(cfg, train, job, data, step)
        job.close()
        return [done[s] for s in job.seeds]


def metric(cfg: DictConfig, records: list[dict]) -> float:
    """The mean over the job's seeds of the validation error (%) with val=true, at the epoch
    chosen on it (best_val), else of the test error; a diverged seed counts as DIVERGED."""
    def error(rec: dict) -> float:
        if rec["stop"] == "diverged":
            return DIVERGED
        return rec["best_val"]["val_error"] if cfg.val else rec["test_error"]
    return sum(error(rec) for rec in records) / len(records)


def _train(cfg: DictConfig, seeds: list[int], job: Job, data: Data, step: Step | None) -> dict[int, dict]:
    """Train `seeds` together (from the job's checkpoint where it holds them) and write each
    seed's record the moment it is final; return those records."""
    rule = RULES[cfg.method.name]
    protocol = Protocol(lr=effective_lr(cfg), batch_size=cfg.batch_size, max_epochs=epoch_limit(cfg),
                        schedule=cfg.schedule, halve_every=cfg.halve_every,
                        p_input=cfg.reg.p_input, p_hidden=cfg.reg.p_hidden,
                        p_conv=conv_dropout(cfg), eps=cfg.reg.eps, compile=cfg.compile,
                        align_every=cfg.align_every if cfg.track_alignment else 0,
                        freeze_first=cfg.freeze_first_epochs)
    state = job.resume(seeds)
    if state is None:
        state = init_state(seeds, architecture(cfg, data), cfg.model.activation, rule, job.device, cfg.rmsprop_init)
    log.info(f"{cfg.dataset.name} {row_label(cfg)} {cfg.method.name}: seeds {state.seeds} on {job.device}, "
             f"lr {protocol.lr:g}, batch {cfg.batch_size}, at most {protocol.max_epochs} epochs")
    code = provenance.code()  # what trained them: version, commit, uncommitted changes
    context = provenance.context(cfg, job.device, len(seeds), row_label(cfg), code)
    started, records = time.time(), {}
    with contextlib.closing(Reporter(cfg, state.seeds, state.history, state.epoch, protocol.lr)) as reporter:
        def finish(result: SeedResult) -> None:
            records[result.seed] = rec = provenance.record(context, result, time.time() - started)
            job.write(rec, result.net, code.diff)
            reporter.final(result, rec)

        fit(state, data, rule, protocol, on_final=finish, on_rows=reporter.rows, on_step=reporter.step,
            on_epoch=job.save, step=step)
    job.drop_checkpoint()
    log.info(f"records: {job.records[seeds[0]].parent}/")
    return records


def load_data(cfg: DictConfig, device: torch.device) -> Data:
    """The data set on the device: split for validation and whitened as the config asks."""
    data = load(cfg.dataset, cfg.data_dir, device)
    if cfg.val:
        data = data.hold_out(config.VAL_SIZE)
    if whitened(cfg):  # fitted on what is trained on: the validation images stay unseen
        cache = None if cfg.dataset.name == "synthetic" else Path(cfg.data_dir).expanduser() / CACHE_DIR
        data = whiten(data, cfg.dataset.zca_eps, cache, cfg.dataset.name)
    return data


def whitened(cfg: DictConfig) -> bool:
    """whiten=null means the paper's choice: ZCA for the conv nets, [0, 1] pixels for MLPs."""
    return bool(cfg.model.channels) if cfg.whiten is None else cfg.whiten


def architecture(cfg: DictConfig, data: Data) -> MLPArch | ConvArch:
    m, classes = cfg.model, cfg.dataset.classes
    if m.channels:
        return ConvArch(data.shape, tuple(m.channels), (m.width,) * m.depth, classes, m.kernel,
                        m.pool, m.pool_stride)
    return MLPArch(tuple(layer_sizes(data.features, m.depth, m.width, classes)))
