#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the tests: everything under one folder.
#   scripts/slurm/cluster.sh start DIR   write DIR/slurm.conf, start munged, slurmctld and slurmd
#                                        (as root, no systemd), wait until the node is idle
#   scripts/slurm/cluster.sh stop DIR    cancel its jobs, stop the daemons DIR's pid files name
# Clients reach it with SLURM_CONF=DIR/slurm.conf. The daemons run under `nice -n 19`, and so
# do the jobs they start: other work on the machine keeps its cores.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath "${2:?usage: cluster.sh start|stop DIR}")
export SLURM_CONF=$dir/slurm.conf

free_ports() {  # two TCP ports nobody listens on: another cluster may run beside this one
    python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))'
}

write_conf() {
    local node cpus mem ports
    node=$(hostname -s)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))  # MB: half the machine's
    read -r -a ports <<< "$(free_ports)"
    mkdir -p "$dir/state" "$dir/spool"
    cat > "$SLURM_CONF" <<EOF
# one-node test cluster written by scripts/slurm/cluster.sh
ClusterName=dfarun-test
SlurmctldHost=$node
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups, accounting or MPI: a bare machine has none of them
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
# look at pending jobs every 2 s, not 60: a requeued job starts as soon as it may
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# seconds between SIGTERM and SIGKILL when a job is cancelled or requeued (real clusters: ~30)
KillWait=2
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
# MaxTime: a job asking for more than 60 minutes pends with reason PartitionTimeLimit
PartitionName=debug Nodes=$node Default=YES MaxTime=60 State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || { echo "cluster.sh: the Slurm daemons need root" >&2; exit 1; }
    mkdir -p "$dir"
    chmod 755 "$dir"  # munged wants its socket's folder searchable by all (mktemp -d makes it 0700)
    write_conf
    head -c 1024 /dev/urandom > "$dir/munge.key"
    chmod 400 "$dir/munge.key"
    nice -n 19 munged --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
    nice -n 19 slurmctld -f "$SLURM_CONF"
    nice -n 19 slurmd -f "$SLURM_CONF" -N "$(hostname -s)"
    for _ in $(seq 120); do  # the node registers within a few seconds
        if [ "$(sinfo --noheader --format=%t 2>/dev/null)" = idle ]; then
            echo "cluster.sh: one-node Slurm cluster up: SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "cluster.sh: the node did not become idle within 60 s; sinfo says: $(sinfo --noheader 2>&1)" >&2
    tail -n 5 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
    exit 1
}

stop() {
    # jobs first: their processes outlive slurmd
    if [ -e "$dir/slurmctld.pid" ] && scancel --full --user=root >/dev/null 2>&1; then
        for _ in $(seq 30); do
            [ -z "$(squeue --noheader 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    local pid name
    for name in slurmd slurmctld munged; do
        [ -e "$dir/$name.pid" ] || continue
        pid=$(cat "$dir/$name.pid")
        # the pid is this daemon's, not a process that got the number after it exited
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || continue
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    done
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
