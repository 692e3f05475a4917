#!/usr/bin/env bash
# One command on the accelerator machine (no network, no hydra there): install the wheels and
# unpack MNIST that scripts/accelerator/prepare.sh put in .accel/, then run, each phase under its
# own time limit and its output kept in $OUT/<phase>.log:
#   tests     pytest -m cuda tests/                       (at most T_TESTS s; skipped without a GPU)
#   bench     python -m dfarun.cli.bench                      (at most T_BENCH s)
#   estimate  python -m dfarun.cli.bench --estimate, per table (at most T_ESTIMATE s for all tables)
#   train     Table 1 cells at the paper profile on MNIST, CONCURRENT at a time, in CELLS' order,
#             until DEADLINE_S after the start; a cell still running then is stopped (SIGTERM)
# and always, last: the finished seeds' records into $OUT/records.tar.gz, and $OUT/summary.txt.
# Nothing runs past DEADLINE_S + 20 s (+ a few seconds to pack): 500 s by default, for a 540 s slot.
#
# Dry run on a CPU (docs/accelerator.md):
#   OUT=/tmp/x DEVICE=cpu PYTHON=.venv/bin/python DEADLINE_S=90 PHASES=train CELLS=1x800_tanh:dfa \
#     REUSE= EXTRA='dataset=synthetic max_epochs=1 compile=false seeds=[0,1]' scripts/accelerator/run.sh
set -u

invoked=$PWD
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
start=$(date +%s)
abs() { case $1 in /*) echo "$1" ;; *) echo "$invoked/$1" ;; esac; }

# --- knobs (environment variables) --------------------------------------------------------------
PYTHON=${PYTHON:-python3}
ACCEL=$(abs "${ACCEL:-$root/.accel}")     # what prepare.sh filled: wheels/, mnist/
OUT=$(abs "${OUT:-$root/accel-out}")      # what comes back: at most 8 files
DATA=$(abs "${DATA:-/tmp/data}")          # data_dir for the cells: MNIST is unpacked here
STORE=$(abs "${STORE:-/tmp/store}")       # the cells' store; only its top-level *.json are packed
SITE=$(abs "${SITE:-/tmp/site}")          # where the wheels are installed
DEVICE=${DEVICE:-cuda}                    # the cells' device=
PROBE=${PROBE:-1}                         # 0: no nvidia-smi, torch or import check (no cuda tests)
DEADLINE_S=${DEADLINE_S:-500}             # seconds after the start when training is stopped
# seconds, at most; the defaults are what the first GPU run needed (docs/accelerator.md)
T_TESTS=${T_TESTS:-100} T_BENCH=${T_BENCH:-170} T_ESTIMATE=${T_ESTIMATE:-120}
PHASES=${PHASES:-"tests bench estimate train"}
# BENCH_ARGS, ESTIMATE_ARGS: one bench process per argument set; ';' separates sets, run in turn
# ('--repeats 2 ; --eager --repeats 2': the compiled step, then the eager one)
# 2x800 eager, 2x800 compiled, conv_tanh DFA compiled (BENCH_ARGS='': one run, the bench's defaults)
BENCH_ARGS=${BENCH_ARGS-"--skip conv --eager --repeats 2 --gemm-seconds 0.5 ; --skip conv --repeats 2 --gemm-seconds 0.5 ; --skip mlp --methods dfa --repeats 1 --gemm-seconds 0.2"}
ESTIMATE_TABLES=${ESTIMATE_TABLES:-"1 2 3"}  # one bench process per table: a timeout keeps the done ones
# eager: compiling 30 cells takes too long (ESTIMATE_ARGS='': the bench's defaults, compiled);
# --epochs-from: also the hours at the epochs the committed records ran
ESTIMATE_ARGS=${ESTIMATE_ARGS-"--eager --gemm-seconds 0.2 --epochs-from results/records"}
PROFILE=${PROFILE:-paper}                 # 10 seeds, at most 300 epochs, the stopping rule
CONCURRENT=${CONCURRENT:-3}               # cells trained at once (they share the GPU)
MIN_CELL_S=${MIN_CELL_S:-60}              # no cell is started with fewer seconds than this left
EXTRA=${EXTRA:-}                          # overrides added to every cell, e.g. 'max_epochs=1'
# row:method, started in this order: the Table 1 cells with fewer than 10 seeds in results/records
# (session 7), the ones most likely to finish first; 100x240 is left out (about 2 h a cell eagerly)
CELLS=${CELLS:-"2x800_logistic:dfa 4x800_tanh:bp 4x800_tanh:dfa 2x800_tanh_do:bp 2x800_tanh_do:fa 2x800_tanh_do:dfa
  7x240_tanh:bp 7x240_tanh:fa 7x240_tanh:dfa 2x800_tanh_adv:bp 2x800_tanh_adv:fa 2x800_tanh_adv:dfa"}
# records already in the repository: copied into the store first, so the cells train only the
# seeds that lack one; they are not packed (unless a cell rewrote them). REUSE= turns this off.
REUSE=${REUSE-$root/results/records}

# the numbers are checked before anything runs: bash would read "500s" as 0 and skip every phase
for knob in DEADLINE_S T_TESTS T_BENCH T_ESTIMATE MIN_CELL_S; do
    [[ ${!knob} =~ ^(0|[1-9][0-9]*)$ ]] || { echo "run.sh: error: $knob=${!knob}: expected a whole number of seconds" >&2; exit 2; }
done
[[ $CONCURRENT =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: error: CONCURRENT=$CONCURRENT: expected a whole number of cells, at least 1" >&2; exit 2; }

export PYTHONUNBUFFERED=1 PYTHONPATH=$SITE:$root${PYTHONPATH:+:$PYTHONPATH}  # dfarun: this checkout
dfarun=("$PYTHON" -c 'import sys; from dfarun.cli.entry import dfarun; sys.argv[0] = "dfarun"; dfarun()')
read -r -a extra <<<"$EXTRA"
mkdir -p "$OUT" || { echo "run.sh: error: cannot create OUT=$OUT" >&2; exit 2; }
rm -f "$OUT"/{setup,tests,bench,estimate,train}.log "$OUT"/summary.txt "$OUT"/records.tar.gz
work=$(mktemp -d "${TMPDIR:-/tmp}/dfarun-accel.XXXXXX")  # cell logs, pids, exit codes; removed at the end
summary_rows=() failed=0 signalled="" current="" gpu="" torch_line="" started=() not_started=()

left() { echo $((start + DEADLINE_S - $(date +%s))); }
row() { printf '%-9s %-8s %8s %9s  %s' "$@"; }  # phase, exit code, seconds, budget, note

# --- pack: always last, also after a signal (the EXIT trap) --------------------------------------
pack() {
    trap - EXIT TERM INT HUP
    local c pid rc secs line n_new=0 n_same=0 fin=0 stop=0 bad=0 f
    [ -n "$current" ] && summary_rows+=("$(row "$current" signal - - "interrupted: packing")")
    [ -n "$timed_pid" ] && kill -TERM "$timed_pid" 2>/dev/null  # a phase's command (run_timed)
    # cells still running (we got a signal): SIGTERM to their `timeout`, which passes it on
    for c in "${started[@]}"; do
        [ -f "$work/$c.rc" ] || { pid=$(cat "$work/$c.pid" 2>/dev/null) && kill -TERM "$pid" 2>/dev/null; }
    done
    wait  # at most 20 s more: each cell's timeout sends SIGKILL then
    # the finished seeds' records: top-level *.json only (no checkpoints, locks, live, sweeps),
    # leaving out those copied from REUSE and not rewritten
    : >"$work/pack.list"
    for f in "$STORE"/*.json; do
        [ -f "$f" ] || continue
        if [ -n "$REUSE" ] && cmp -s "$f" "$REUSE/$(basename "$f")"; then
            n_same=$((n_same + 1))
        else
            basename "$f" >>"$work/pack.list"
            n_new=$((n_new + 1))
        fi
    done
    tar -czf "$OUT/records.tar.gz" -C "$STORE" -T "$work/pack.list" 2>/dev/null ||
        tar -czf "$OUT/records.tar.gz" -T /dev/null || failed=1
    {
        echo "dfarun accelerator run: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
        echo "device: ${gpu/#none/no CUDA device} (${torch_line:-torch ?})"
        echo "settings: DEADLINE_S=$DEADLINE_S CONCURRENT=$CONCURRENT PROFILE=$PROFILE DEVICE=$DEVICE EXTRA='$EXTRA'"
        echo
        row phase rc seconds budget_s note
        echo
        printf '%s\n' "${summary_rows[@]}"
        echo
        for c in "${started[@]}"; do
            read -r rc secs <"$work/$c.rc" 2>/dev/null || { rc=? secs=?; }
            case $rc in
                0) fin=$((fin + 1)) ;;
                124 | 137 | 143) stop=$((stop + 1)) ;;
                *) bad=$((bad + 1)) failed=1 ;;
            esac
            line=$(grep -v '^[[:space:]]*$' "$work/$c.log" 2>/dev/null | tail -1 | cut -c1-150)
            printf 'cell %-22s rc %-4s %5s s  %s\n' "$c" "$rc" "$secs" "$line"
        done
        echo "cells: ${#started[@]} started, $fin finished, $stop stopped early (deadline or signal: rc 124/137/143," \
            "checkpoint left behind), $bad failed; ${#not_started[@]} not started${not_started:+: ${not_started[*]}}"
        echo "records: $n_new in records.tar.gz; $n_same copied from ${REUSE:-nowhere} and unchanged (not packed)"
        echo "total: $(($(date +%s) - start)) s"
    } >"$OUT/summary.txt"
    for c in "${started[@]}"; do
        { echo "===== $c: $(cat "$work/$c.rc" 2>/dev/null || echo 'no exit code') (exit code, seconds)"
          cat "$work/$c.log" 2>/dev/null; } >>"$OUT/train.log"
    done
    rm -rf "$work"
    echo "== summary ($OUT/summary.txt)"
    cat "$OUT/summary.txt"
    ((failed == 0)) || echo "run.sh: a phase or a cell failed: see the logs in $OUT" >&2
    exit "${signalled:-$failed}"
}
trap pack EXIT
trap 'signalled=143; exit 143' TERM INT HUP

# run_timed LOG SECONDS CMD...: CMD for at most SECONDS (SIGTERM, then SIGKILL 10 s later), its
# output shown and appended to LOG; returns CMD's exit code (124: it timed out). CMD runs in the
# background and is waited for, so that a signal to this script is acted on at once (bash runs a
# trap only between commands, and `timeout` keeps CMD out of the terminal's process group):
# pack stops it.
timed_pid=""
run_timed() {
    local log=$1 secs=$2 rc out tee_pid
    shift 2
    exec {out}> >(tee -a "$log")  # the log's writer, waited for below: its last lines land before the next run's
    tee_pid=$!
    timeout -s TERM --kill-after=10 "$secs" "$@" </dev/null >&"$out" 2>&1 &
    timed_pid=$!
    exec {out}>&-  # tee ends when the command's copy closes too
    wait "$timed_pid"
    rc=$?
    timed_pid=""
    wait "$tee_pid" 2>/dev/null
    return "$rc"
}

# phase NAME BUDGET_S FUNCTION: FUNCTION SECONDS, with SECONDS = BUDGET_S cut to the deadline.
# Its exit code, time and `note` go to the summary; a failure never stops the later phases.
phase() {
    local name=$1 budget=$2 fn=$3 secs t0 rc why=""
    note=""
    secs=$(($(left) - 10))  # 10 s: timeout's grace before SIGKILL
    ((budget < secs)) && secs=$budget
    if [[ " $PHASES " != *" $name "* ]]; then
        why="not in PHASES"
    elif ((secs < 5)); then
        why="no time left before the deadline"
    fi
    if [ -n "$why" ]; then
        summary_rows+=("$(row "$name" skipped - "$budget" "$why")")
        # shellcheck disable=SC2206  # CELLS: a list of words
        [ "$name" = train ] && not_started=($CELLS)
        return
    fi
    echo "== $name: at most $secs s ($(($(date +%s) - start)) s after the start)"
    current=$name t0=$(date +%s)
    "$fn" "$secs"
    rc=$?
    current=""
    case $rc in
        0) ;;
        124 | 137) note="stopped at its time limit${note:+; $note}" ;;
        *) note="failed${note:+; $note}" failed=1 ;;
    esac
    summary_rows+=("$(row "$name" "$rc" $(($(date +%s) - t0)) "$secs" "$note")")
}

# --- setup: wheels, MNIST, what the machine is ----------------------------------------------
setup() {
    local raw=$DATA/MNIST/raw f err
    if "$PYTHON" -c 'import hydra, omegaconf' 2>/dev/null; then
        echo "hydra: importable by $PYTHON already"
    elif compgen -G "$ACCEL/wheels/*.whl" >/dev/null; then
        timeout 60 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$SITE" "$ACCEL"/wheels/*.whl ||
            # no pip: a pure-Python wheel is a zip of the files to put on the path
            timeout 60 "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
                "$SITE" "$ACCEL"/wheels/*.whl
        echo "hydra: installed $(cd "$ACCEL/wheels" && echo *.whl) into $SITE"
    else
        echo "hydra: not importable, and no wheels in $ACCEL/wheels (run scripts/accelerator/prepare.sh first)"
    fi

    if [ -f "$raw/train-images-idx3-ubyte" ] && [ -f "$raw/t10k-labels-idx1-ubyte" ]; then
        echo "mnist: in $raw already"
    elif compgen -G "$ACCEL/mnist/MNIST/raw/*.gz" >/dev/null; then
        mkdir -p "$raw"
        for f in "$ACCEL"/mnist/MNIST/raw/*.gz; do
            timeout 60 gunzip -c "$f" >"$raw/$(basename "$f" .gz)"
        done
        echo "mnist: $(ls "$raw" | wc -l) files unpacked into $raw"
    else
        echo "mnist: no copy in $ACCEL/mnist (run scripts/accelerator/prepare.sh first): MNIST cells will fail"
    fi

    if [ "$PROBE" != 1 ]; then
        echo "gpu: none"
        echo "torch not probed (PROBE=$PROBE)"
        return
    fi
    command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi
    timeout 90 "$PYTHON" -c '
import os, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {os.cpu_count()} CPUs")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
else:
    print("gpu: none")
import dfarun.cli.main  # hydra, omegaconf and this checkout
print(f"dfarun: {os.path.dirname(dfarun.cli.main.__file__)}")' 2>&1 | tail -4
}
echo "== setup"
t0=$(date +%s) current=setup
setup >"$OUT/setup.log" 2>&1
current=""
cat "$OUT/setup.log"
summary_rows+=("$(row setup - $(($(date +%s) - t0)) - "setup.log")")
gpu=$(sed -n 's/^gpu: //p' "$OUT/setup.log")
gpu=${gpu:-none}
torch_line=$(grep -m1 '^torch ' "$OUT/setup.log")

# --- the phases ---------------------------------------------------------------------------------
phase_tests() {
    if [ "$gpu" = none ]; then
        note="skipped: no CUDA device"
        echo "tests: $note" | tee -a "$OUT/tests.log"
        return 0
    fi
    # a test module that fails to import must not hide the cuda tests of the others
    run_timed "$OUT/tests.log" "$1" "$PYTHON" -m pytest -q -m cuda --continue-on-collection-errors \
        -p no:cacheprovider tests/
    local rc=$?
    [ "$rc" = 5 ] && note="no test is marked cuda"
    return "$rc"
}

# arg_sets STRING: the ';'-separated argument sets of STRING, one a line, trimmed; empty sets
# are dropped (a stray ';' costs no run), but an empty STRING is one empty set: the defaults
arg_sets() {
    local sets
    sets=$(tr ';' '\n' <<<"$1" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' | grep -v '^$')
    echo "$sets"
}

phase_bench() {
    local end=$(($(date +%s) + $1)) args secs rc n=0
    while IFS= read -r args; do
        n=$((n + 1)) secs=$((end - $(date +%s)))
        ((secs >= 5)) || { note="bench runs done: $((n - 1))"; return 124; }
        echo "-- bench run $n: ${args:-(defaults)}" | tee -a "$OUT/bench.log"
        # shellcheck disable=SC2086  # args: a list of words
        run_timed "$OUT/bench.log" "$secs" "$PYTHON" -m dfarun.cli.bench $args
        rc=$?
        ((rc == 0)) || { note="bench runs done: $((n - 1)); run $n: exit $rc"; return "$rc"; }
    done < <(arg_sets "$BENCH_ARGS")
}

phase_estimate() {
    local end=$(($(date +%s) + $1)) t secs rc done="" args
    while IFS= read -r args; do
        for t in $ESTIMATE_TABLES; do
            secs=$((end - $(date +%s)))
            ((secs >= 5)) || { note="done: ${done:-none}"; return 124; }
            echo "-- estimate, table $t: ${args:-(defaults)}" | tee -a "$OUT/estimate.log"
            # shellcheck disable=SC2086
            run_timed "$OUT/estimate.log" "$secs" "$PYTHON" -m dfarun.cli.bench --skip mlp,conv --estimate \
                --tables "$t" $args
            rc=$?
            ((rc == 0)) || { note="done: ${done:-none}; table $t ($args): exit $rc"; return "$rc"; }
            done="${done:+$done, }table $t${args:+ ($args)}"
        done
    done < <(arg_sets "$ESTIMATE_ARGS")
}

# One cell in the background: `timeout` stops it at the deadline (SIGTERM: dfarun writes its
# checkpoint and exits 143; SIGKILL 20 s later); its exit code and seconds go to $work/<cell>.rc.
start_cell() {
    local cell=$1 secs=$2 row=${1%%:*} method=${1##*:}
    (
        t0=$(date +%s)
        DFARUN_THREADS=$threads timeout -s TERM --kill-after=20 "$secs" "${dfarun[@]}" \
            "method=$method" "row=$row" "profile=$PROFILE" "data_dir=$DATA" "store=$STORE" \
            "device=$DEVICE" "${extra[@]}" </dev/null >"$work/$cell.log" 2>&1 &
        echo $! >"$work/$cell.pid"
        wait $!
        echo "$? $(($(date +%s) - t0))" >"$work/$cell.rc"
    ) &
    started+=("$cell")
    echo "train: started $cell (at most $secs s, $threads CPU threads)" | tee -a "$OUT/train.log"
}

running() {
    local n=0 c
    for c in "${started[@]}"; do [ -f "$work/$c.rc" ] || n=$((n + 1)); done
    echo "$n"
}

threads=${DFARUN_THREADS:-$(($(nproc) / CONCURRENT))}  # torch's CPU threads per cell
((threads >= 1)) || threads=1
phase_train() {
    local cell secs f
    mkdir -p "$STORE"
    if [ -n "$REUSE" ] && compgen -G "$REUSE/*.json" >/dev/null; then
        for f in "$REUSE"/*.json; do [ -e "$STORE/$(basename "$f")" ] || cp -p "$f" "$STORE/"; done
        echo "train: the records in $REUSE copied into $STORE: their seeds are not trained again" |
            tee -a "$OUT/train.log"
    fi
    for cell in $CELLS; do
        while (($(running) >= CONCURRENT)); do sleep 1; done
        secs=$(left)
        if ((secs < MIN_CELL_S)); then
            not_started+=("$cell")
            continue
        fi
        start_cell "$cell" "$secs"
    done
    while (($(running) > 0)); do sleep 1; done
    wait
    ((${#started[@]} > 0)) || note="no cell started"
}

phase tests "$T_TESTS" phase_tests
phase bench "$T_BENCH" phase_bench
phase estimate "$T_ESTIMATE" phase_estimate
phase train "$DEADLINE_S" phase_train
# the EXIT trap packs and sets the exit code
