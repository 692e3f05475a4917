#!/usr/bin/env bash
# `make test-slurm`: install Slurm if needed, start a one-node cluster under a temporary folder,
# run the tests marked `slurm` against it, stop the cluster -- also when a test fails or the run
# is interrupted. Usage: scripts/slurm/test.sh PYTEST [pytest args...]
# The folder (configuration, state, daemon logs) is removed after a green run and kept otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
pytest=${1:?usage: test.sh PYTEST [pytest args...]}
shift

"$here/install.sh"
dir=$(mktemp -d /tmp/dfarun-slurm.XXXXXX)
status=1
finish() {
    "$here/cluster.sh" stop "$dir" || true
    if [ "$status" = 0 ]; then
        rm -rf "$dir"
    else
        echo "test-slurm: the cluster's configuration and logs are kept in $dir" >&2
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

"$here/cluster.sh" start "$dir"
export SLURM_CONF=$dir/slurm.conf DFARUN_SLURM_REQUIRED=1  # conftest: no cluster is an error here
status=0
nice -n 19 "$pytest" -m slurm "$@" || status=$?
exit "$status"
