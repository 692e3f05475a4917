"""The training loop: optimizer, stacked seeds, stopping rule, divergence."""
from __future__ import annotations

import math

import pytest
import torch

from dfarun.engine.rules import RULES
from dfarun.engine.state import init_state
from dfarun.engine.step import rmsprop_
from dfarun.engine.train import AVG_KEEP, STOP_AT, Protocol, fit, train_epoch

from helpers import CPU, assert_stack_trains_as_alone


def test_rmsprop_matches_torch_optim_bit_for_bit():
    """One rate for every seed, as a [S] tensor: the same floats as torch.optim.RMSprop."""
    p = torch.randn(2, 5, 4)
    ours, theirs = p.clone(), p.clone().requires_grad_()
    opt = torch.optim.RMSprop([theirs], lr=1e-2, alpha=0.99, eps=1e-8)
    sq = [torch.zeros_like(p)]
    for _ in range(5):
        g = torch.randn_like(p)
        rmsprop_([ours], [g], sq, torch.full((2,), 1e-2))
        theirs.grad = g.clone()
        opt.step()
    assert torch.equal(ours, theirs.detach())


def test_rmsprop_per_seed_rates_equal_each_seed_alone():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, generator=g)]
    grads = [torch.randn_like(p) for p in params]
    lr = torch.tensor([1e-2, 5e-3, 2.5e-3])
    stacked, sq = [p.clone() for p in params], [torch.zeros_like(p) for p in params]
    rmsprop_(stacked, grads, sq, lr)
    for s in range(3):
        alone, sq1 = [p[s:s + 1].clone() for p in params], [torch.zeros_like(p[s:s + 1]) for p in params]
        rmsprop_(alone, [gr[s:s + 1] for gr in grads], sq1, lr[s:s + 1])
        for a, b in zip(alone, stacked):
            assert torch.equal(a[0], b[s])


@pytest.mark.parametrize("method,dropout", [("bp", False), ("dfa", False), ("bp", True), ("dfa", True)])
def test_stacked_seeds_equal_single_seed(method, dropout, toy_data):
    """Dropout too: a seed's masks are a function of the seed, not of its place in the stack."""
    protocol = Protocol(1e-2, 32, 1, p_input=0.1 * dropout, p_hidden=0.5 * dropout)
    stacked, _ = assert_stack_trains_as_alone([12, 16, 16, 3], method, toy_data, protocol, epochs=3)
    # and the seeds really are different runs
    assert not torch.allclose(stacked.net.weights[0][0], stacked.net.weights[0][1])


def test_each_epoch_reshuffles_and_sees_every_example_once_with_a_short_last_batch(monkeypatch, toy_data):
    import dfarun.engine.step as step
    data = toy_data  # 200 training examples, batch 64 -> 64, 64, 64, 8
    data.x_train[:, 0] = torch.arange(200.0)  # tag each example by its row
    batches = []
    real = step.updates
    monkeypatch.setattr(step, "updates", lambda net, fb, rule, x, t, *a: (batches.append(x), real(net, fb, rule, x, t, *a))[1])
    state = init_state([0, 1], [12, 8, 3], "tanh", RULES["bp"], CPU)
    orders = []
    for _ in range(2):
        batches.clear()
        train_epoch(state, data, RULES["bp"], Protocol(1e-3, 64, 1))
        assert [b.shape[1] for b in batches] == [64, 64, 64, 8]
        tags = torch.cat([b[:, :, 0] for b in batches], dim=1).long()  # [seeds, 200]
        for seed_tags in tags:
            assert torch.equal(seed_tags.sort().values, torch.arange(200))
        orders.append(tags)
    assert not torch.equal(orders[0][0], orders[0][1])  # each seed has its own order
    assert not torch.equal(orders[0][0], orders[1][0])  # and a new one every epoch


def test_converges_and_stops_on_the_moving_average_rule(toy_data):
    data = toy_data
    state = init_state([0], [12, 32, 3], "tanh", RULES["dfa"], CPU)
    [result] = fit(state, data, RULES["dfa"], Protocol(1e-2, 16, 100))
    assert result.stop == "converged"
    m = 1.0
    for row in result.history:
        m = AVG_KEEP * m + (1 - AVG_KEEP) * row["train_error"] / 100
        assert (m <= STOP_AT) == (row is result.history[-1])


def test_max_epochs_stop(toy_data):
    data = toy_data
    state = init_state([0, 1], [12, 8, 3], "tanh", RULES["fa"], CPU)
    results = fit(state, data, RULES["fa"], Protocol(1e-4, 64, 2))
    assert sorted(r.seed for r in results) == [0, 1]
    assert all(r.stop == "max_epochs" and len(r.history) == 2 for r in results)


def test_a_diverged_seed_stops_and_the_others_go_on(toy_data):
    data = toy_data
    state = init_state([0, 1, 2], [12, 32, 3], "tanh", RULES["dfa"], CPU)
    state.net.weights[1][1].fill_(float("nan"))  # seed 1 is broken from the start
    final = []
    results = fit(state, data, RULES["dfa"], Protocol(1e-2, 16, 100), on_final=final.append)
    by_seed = {r.seed: r for r in results}
    assert by_seed[1].stop == "diverged" and len(by_seed[1].history) == 1
    assert not math.isfinite(by_seed[1].history[0]["train_loss"])
    for s in (0, 2):
        assert by_seed[s].stop == "converged" and len(by_seed[s].history) > 1
    assert [r.seed for r in final][0] == 1  # reported as soon as it was final


def test_bench_runs_and_prints_its_table(capsys, torch_threads):
    from dfarun.cli import bench
    # the table's shape is under test, not the numbers: the fewest examples and repeats that make every row
    bench.main(["--examples", "128", "--seeds", "1,2", "--gemm-seconds", "0.05", "--device", "cpu", "--eager",
                "--conv-examples", "2", "--conv-seeds", "1,2", "--repeats", "2"])
    out = capsys.readouterr().out
    assert "GFLOP/s at 2048^3" in out
    rows = [line for line in out.splitlines() if line.startswith("| bp") or line.startswith("| dfa")]
    assert len(rows) == 8  # 2 methods x 2 stack sizes, for 2x800 and conv_tanh
    assert "conv_tanh on 3x32x32 images" in out and "images/s" in out
    headers = [line for line in out.splitlines() if line.startswith("| method")]
    assert len(headers) == 2 and all("slowest / fastest" in h for h in headers)  # 2 epochs a row or more
    # on a CPU: the same epoch idle, and beside a CPU-bound process with every core and with a job's choice
    assert "Threads: an idle machine and a busy one" in out
    cases = [line.split("|")[1].strip() for line in out.splitlines() if "| idle" in line or "| 1 CPU-bound" in line]
    assert cases[0] == "idle, torch's default (every core)" and cases[-2:] == [
        "1 CPU-bound process beside it, torch's default (every core)",
        f"1 CPU-bound process beside it, a job's choice ({cases[-1].split('(')[-1]}"]


@pytest.fixture
def torch_threads():
    """bench.main sets torch's threads for the process, as a job does: put them back."""
    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def test_bench_runs_on_dfarun_threads(monkeypatch, capsys, torch_threads):
    from dfarun.cli import bench
    monkeypatch.setenv("DFARUN_THREADS", "1")
    bench.main(["--examples", "128", "--seeds", "1", "--methods", "dfa", "--gemm-seconds", "0.01", "--device", "cpu",
                "--eager", "--skip", "conv", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.startswith("CPU, 1 threads (DFARUN_THREADS)")
    assert "| 1 CPU-bound process beside it, a job's choice (DFARUN_THREADS) |         1 |" in out
    assert ("| idle, the bench's threads (DFARUN_THREADS)" in out) == (torch_threads != 1)  # beside torch's own


def test_break_even_is_compile_seconds_over_seconds_saved_per_step(monkeypatch):
    from dfarun.cli import bench_speed
    measured = {"2x800:dfa:1": {"eager_s": 0.007, "compiled_s": 0.003, "compile_s": 20.0},
                "conv:dfa:1": {"eager_s": 1.0, "compiled_s": 1.2, "compile_s": 60.0}}
    children = []

    def child(case, steps, threads, cache, device):
        children.append((case, cache))
        return measured[case] | ({"compile_s": 2.0} if len(children) % 2 == 0 else {})  # the second: warm
    monkeypatch.setattr(bench_speed, "_child", child)
    mlp, conv = bench_speed.break_even_rows(["2x800:dfa:1", "conv:dfa:1"], 300, 2)
    assert mlp["break-even steps (cold)"] == pytest.approx(20.0 / 0.004)
    assert mlp["break-even steps (warm)"] == pytest.approx(2.0 / 0.004)
    assert mlp["= MNIST epochs (cold)"] == pytest.approx(5000 / 938)
    assert conv["break-even steps (cold)"] == float("inf")  # compiled is no faster: it never pays
    assert children[0][1] == children[1][1] != children[2][1]  # cold then warm in one fresh cache a case


def test_table_estimate_scales_one_timed_epoch_to_the_paper_profile(monkeypatch):
    """hours = Σ over cells of (epoch seconds on the timed examples) x (full set / timed) x 300."""
    from dfarun.cli import bench
    timed = []
    monkeypatch.setattr(bench, "time_epoch", lambda arch, method, seeds, data, p: (
        timed.append((type(arch).__name__, method, seeds, data.x_train.shape[0], p.p_hidden)), ([2.0], 0.0))[1])
    heard = []
    (row,) = bench.estimate_tables(CPU, 8, bench.PROTOCOL, tables=[2], on_cell=lambda *cell: heard.append(cell))
    assert {t[0] for t in timed} == {"MLPArch", "ConvArch"} and {t[2] for t in timed} == {10}
    # each cell reported as it is timed, with its own hours: they add up to the table's
    assert len(heard) == len(timed) and {(t, m) for t, _, m, _ in heard} == {(2, m) for m in ("bp", "fa", "dfa")}
    assert ("3x1000_tanh_do", "dfa") in {(r, m) for _, r, m, _ in heard}
    assert sum(h for *_, h in heard) == pytest.approx(row["hours (10 seeds, each row's epoch limit; upper bound)"])
    assert len(timed) == row["cells"] == 4 * 3  # rows x BP/FA/DFA, the conv row included
    # every row trains on all 50,000 images (3x1000 + DO too: the paper tuned only MNIST's dropout row)
    assert sum(t[4] == 0.5 for t in timed) == 3
    expected = 2.0 * 300 / 8 * 50_000 * 12 / 3600
    assert row["hours (10 seeds, each row's epoch limit; upper bound)"] == pytest.approx(expected)


def test_table_estimate_at_recorded_epochs(monkeypatch, tmp_path):
    """--epochs-from: a cell the records have costs its longest seed's epochs; the others their
    limit. Rows left out (--skip-rows) are not timed."""
    from dfarun.cli import bench
    monkeypatch.setattr(bench, "time_epoch", lambda arch, method, seeds, data, p: ([2.0], 0.0))
    skip = ("3x1000_tanh", "3x1000_tanh_do", "conv_tanh")
    (row,) = bench.estimate_tables(CPU, 8, bench.PROTOCOL, tables=[2], skip_rows=skip,
                                   epochs={("cifar10", "1x1000 Tanh", "bp"): 30, ("mnist", "1x1000 Tanh", "fa"): 5})
    per_epoch = 2.0 * 50_000 / 8 / 3600  # hours
    assert row["cells"] == 3
    assert row[bench.UPPER] == pytest.approx(3 * 300 * per_epoch)
    assert row[bench.RECORDED] == pytest.approx((30 + 300 + 300) * per_epoch)  # MNIST's record: another cell
    (only,) = bench.estimate_tables(CPU, 8, bench.PROTOCOL, tables=[2], only_rows=("conv_tanh",))
    assert only["cells"] == 3


def test_recorded_epochs_are_each_cells_longest_seed(tmp_path):
    from dfarun.cli import bench
    from dfarun.run import store
    from helpers import record
    for name, rec in {"a": record(seed=0, epochs=40, max_epochs=300), "b": record(seed=1, epochs=55, max_epochs=300),
                      "c": record(seed=2, epochs=47, max_epochs=300),
                      "d": record(method="bp", seed=0, epochs=12, max_epochs=300)}.items():
        store.write(tmp_path / f"{name}.json", rec)
    assert bench.recorded_epochs([str(tmp_path)]) == {("mnist", "2x800 Tanh", "dfa"): 55, ("mnist", "2x800 Tanh", "bp"): 12}


@pytest.mark.parametrize("args, says", [(["--tables", "4"], "--tables=4: expected table numbers from 1, 2, 3"),
                                        (["--skip-rows", "9x9_tanh"], "--skip-rows=9x9_tanh: not a row of tables 1-3"),
                                        (["--rows", "1x800_tanh,nope"], "--rows=nope: not a row of tables 1-3"),
                                        (["--epochs-from", "/no/store"], "--epochs-from=/no/store: no such directory")])
def test_bench_refuses_bad_estimate_options_before_timing_anything(args, says, capsys):
    from dfarun.cli import bench
    with pytest.raises(SystemExit) as exit:
        bench.main(["--estimate", "--gemm-seconds", "60", *args])  # would take minutes if it timed first
    assert exit.value.code == 2 and says in capsys.readouterr().err
