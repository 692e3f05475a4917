#!/usr/bin/env bash
# `make accelerator-prepare`: fill .accel/ (git-ignored) with what scripts/accelerator/run.sh
# needs on the accelerator machine and cannot fetch there (it has no network):
#   .accel/wheels/       hydra-core, omegaconf, antlr4-python3-runtime (pure-Python wheels)
#   .accel/mnist/MNIST/raw/*.gz   the MNIST files from your data_dir, gzipped (53 MB -> ~11 MB)
# Runs here, offline where the wheels are on local disk; safe to rerun (done work is kept).
#
#   DATA_DIR   the data_dir that holds MNIST/raw/ (default: $DFARUN_DATA_DIR, else
#              ~/.cache/dfarun/data, dfarun's own default)
#   ACCEL      the folder to fill (default: .accel at the repository root)
#   WHEELS     the wheels, NAME==VERSION ... (default: the versions installed in .venv)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
accel=${ACCEL:-$root/.accel}
src=${DATA_DIR:-${DFARUN_DATA_DIR:-$HOME/.cache/dfarun/data}}
src=${src/#\~/$HOME}
limit_mib=48  # .accel plus the working tree must travel in 64 MiB; keep room for the tree
mnist=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

die() { echo "prepare.sh: error: $*" >&2; exit 2; }

# Check the inputs before anything is written (a copy already in .accel/ may stand in for them).
for f in "${mnist[@]}"; do
    [ -f "$src/MNIST/raw/$f" ] || [ -f "$src/MNIST/raw/$f.gz" ] || [ -f "$accel/mnist/MNIST/raw/$f.gz" ] ||
        die "no MNIST in $src (expected MNIST/raw/$f); set DATA_DIR to the data_dir that holds MNIST/raw/"
done
py=$root/.venv/bin/python
[ -x "$py" ] || py=python3
"$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip; run 'make install' first"

# The versions the tests pass with here: those installed in .venv (fallbacks for a bare checkout).
version() {
    "$py" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"
}
wheels=${WHEELS:-"hydra-core==$(version hydra-core 1.3.2) omegaconf==$(version omegaconf 2.3.0) antlr4-python3-runtime==$(version antlr4-python3-runtime 4.9.3)"}

mkdir -p "$accel/wheels" "$accel/mnist/MNIST/raw"

# Ignore .accel/ (and run.sh's default output folder, for dry runs here) without touching .gitignore.
if exclude=$(git rev-parse --git-path info/exclude 2>/dev/null); then
    mkdir -p "$(dirname "$exclude")"
    for pattern in /.accel/ /accel-out/; do
        grep -qxF "$pattern" "$exclude" 2>/dev/null || echo "$pattern" >>"$exclude"
    done
fi

# One wheel per package: a local copy if there is one (pip's cache, the machine's wheel folders),
# else pip download, else pip builds it from the sdist (antlr4 4.9.3 is published as an sdist only).
for spec in $wheels; do
    name=${spec%%==*} ver=${spec##*==}
    stem=$(echo "$name" | tr 'A-Z-' 'a-z_')-$ver
    if compgen -G "$accel/wheels/$stem-*.whl" >/dev/null; then
        echo "wheel: $stem (already there)"
        continue
    fi
    rm -f "$accel/wheels/$(echo "$name" | tr 'A-Z-' 'a-z_')"-*.whl  # another version: two break the install
    local_copy=$(find "$HOME/.cache/pip" /opt/pypi/files /opt/wheels -iname "$stem-*-none-any.whl" 2>/dev/null | head -1 || true)
    if [ -n "$local_copy" ]; then
        cp "$local_copy" "$accel/wheels/"
    elif ! "$py" -m pip download -q --no-deps --only-binary=:all: -d "$accel/wheels" "$spec" 2>/dev/null &&
         ! "$py" -m pip wheel -q --no-deps -w "$accel/wheels" "$spec" 2>/dev/null; then
        die "cannot get a wheel for $spec (not in ~/.cache/pip, /opt/pypi/files or /opt/wheels, and pip found none)"
    fi
    got=$(compgen -G "$accel/wheels/$stem-*.whl" | head -1) || die "pip saved no wheel named $stem-*.whl"
    case $got in *-none-any.whl) ;; *) die "$got is not a pure-Python wheel: it may not install there" ;; esac
    echo "wheel: $(basename "$got")"
done

# MNIST, gzipped: redone only when the source is newer than the copy.
fresh=0
for f in "${mnist[@]}"; do
    dst=$accel/mnist/MNIST/raw/$f.gz
    if [ -f "$src/MNIST/raw/$f" ] && [ ! "$dst" -nt "$src/MNIST/raw/$f" ]; then
        gzip -9 -n -c "$src/MNIST/raw/$f" >"$dst.tmp" && mv "$dst.tmp" "$dst"
        fresh=$((fresh + 1))
    elif [ ! -f "$src/MNIST/raw/$f" ] && [ -f "$src/MNIST/raw/$f.gz" ] && [ ! "$dst" -nt "$src/MNIST/raw/$f.gz" ]; then
        cp "$src/MNIST/raw/$f.gz" "$dst"
        fresh=$((fresh + 1))
    fi  # else: the copy is up to date (or made from an earlier DATA_DIR)
done
echo "mnist: $fresh of ${#mnist[@]} files copied from $src, the others already there"

accel_mib=$(du -sm "$accel" | cut -f1)
tree_mib=$(git ls-files -z -co --exclude-standard 2>/dev/null | du -cm --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "$accel: ${accel_mib} MiB (the working tree beside it: ${tree_mib:-?} MiB; 64 MiB travel in all)"
[ "$accel_mib" -le "$limit_mib" ] || die "$accel is ${accel_mib} MiB, over the ${limit_mib} MiB it may take"
