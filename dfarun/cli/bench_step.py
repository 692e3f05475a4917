"""What `make bench` times: one epoch of training as a job runs it, after a warm-up that keeps
compiling, the allocator and kernel choice out of the time (bench.py, bench_speed.py)."""
from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dfarun.engine.conv import ConvArch
from dfarun.engine.data import Data
from dfarun.engine.hyp import IMAGE_SHAPES
from dfarun.engine.hyp import CONF
from dfarun.engine.nets import Dropout
from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import Step, updates
from dfarun.engine.train import Protocol, train_epoch

CIFAR = IMAGE_SHAPES["cifar10"]
PROTOCOL = Protocol(lr=CONF["lr_mnist"].value, batch_size=CONF["batch_size"].value, max_epochs=1,
                    compile=True)  # as `dfarun` trains MNIST (compile=auto compiles a paper-length job)
CONV = ConvArch(CIFAR, (96, 128, 256), (2048, 2048), 10)  # model=conv_tanh on CIFAR-10


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_data(examples: int, features: int, classes: int, device: torch.device, shape=None) -> Data:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(examples, features, generator=g), torch.randint(classes, (examples,), generator=g)
    return Data(x.to(device), y.to(device), x[:10].to(device), y[:10].to(device), shape=shape)


def time_epoch(arch, method: str, seeds: int, data: Data, protocol: Protocol, repeats: int = 1
               ) -> tuple[list[float], float]:
    """(seconds for each of `repeats` epochs over data; one epoch's matmul/conv FLOPs), all
    seeds stacked."""
    device, rule = data.x_train.device, RULES[method]
    # BP's uniform init for every method: zero weights would make some products trivially cheap
    state = init_state(list(range(seeds)), arch, "tanh", RULES["bp"], device)
    state.feedback = init_state(list(range(seeds)), arch, "tanh", rule, device).feedback
    # FLOPs of one seed's step, times the seeds: the seeds are independent copies of the same
    # work, and torch's counter charges a grouped convolution's weight gradient `groups` times over
    batch = min(protocol.batch_size, data.x_train.shape[0])
    idx = torch.arange(batch, device=device)[None]
    target = torch.eye(arch.classes, device=device)[data.y_train[idx]]
    one = state.select([0])
    with FlopCounterMode(display=False) as counter:
        updates(one.net, one.feedback, rule, data.x_train[idx], target)
    flops = counter.get_total_flops() * seeds * data.x_train.shape[0] / batch
    step = Step(protocol.compile, device)
    with torch.no_grad():
        warm_up(step, state, data, rule, protocol)
        times = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            train_epoch(state, data, rule, protocol, step=step)
            sync(device)
            times.append(time.perf_counter() - t)
    return times, flops


def warm_up(step: Step, state, data: Data, rule, protocol: Protocol, calls: int = 3) -> None:
    """Call `step` as train_epoch will (same shapes, strides and arguments), so that compiling,
    the allocator and kernel choice (CUDA graphs record on the second call) are not timed."""
    device, seeds = data.x_train.device, len(state.seeds)
    order = torch.arange(data.x_train.shape[0], device=device).repeat(seeds, 1)
    eye = step.buffer("eye", torch.eye(state.net.weights[-1].shape[1], device=device))
    lr = step.buffer("lr", torch.full((seeds,), protocol.lr, device=device))
    drop = None
    if protocol.dropout:
        drop = Dropout.draw(protocol.p_input, protocol.p_hidden, tuple(state.noise), protocol.batch_size,
                            [data.x_train.shape[1], *state.net.hidden], protocol.p_conv)
    tally = [step.buffer(name, torch.zeros(seeds, device=device)) for name in ("errors", "loss")]
    for _ in range(calls):
        step(state.net, state.feedback, state.sq_avg, rule, data.x_train, data.y_train,
             order[:, :protocol.batch_size], eye, lr, drop, protocol.eps, (), *tally)


