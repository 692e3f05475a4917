#!/usr/bin/env bash
# Install Slurm and munge from the distribution's packages (Debian/Ubuntu), unless they are there.
# Exit codes: 0 installed (or already there), 3 cannot install here (not root, no apt-get, the
# package registry unreachable): .ci/run skips the Slurm tests on 3.
set -uo pipefail

PACKAGES="slurmctld slurmd slurm-client munge"
have() { for c in slurmctld slurmd sbatch scontrol munged; do command -v "$c" >/dev/null || return 1; done; }

if have; then
    exit 0
fi
cannot() { echo "test-slurm: cannot install Slurm: $*" >&2; exit 3; }
[ "$(id -u)" = 0 ] || cannot "not root; install $PACKAGES yourself (sudo apt-get install $PACKAGES)"
command -v apt-get >/dev/null || cannot "no apt-get on this machine; install Slurm and munge with its package manager"

# The packages' scripts would start the system's own munged/slurmd (init.d, where there is no
# systemd); policy-rc.d forbids that while we install, if the machine has no such policy yet.
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && ours=1
fi
trap '[ -n "$ours" ] && rm -f "$policy"' EXIT

echo "test-slurm: installing $PACKAGES (apt-get)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get install -y --no-install-recommends $PACKAGES >"$log" 2>&1; then
    # a fresh machine may have no package lists yet
    if ! { apt-get update && apt-get install -y --no-install-recommends $PACKAGES; } >"$log" 2>&1; then
        tail -3 "$log" >&2
        rm -f "$log"
        cannot "apt-get failed (is the package registry reachable?)"
    fi
fi
rm -f "$log"
have || cannot "installed $PACKAGES, yet slurmctld, slurmd, sbatch or munged is not on PATH"
