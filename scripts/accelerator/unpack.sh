#!/usr/bin/env bash
# Bring the records of an accelerator run (run.sh's records.tar.gz) into the repository's records
# folder. Usage: scripts/accelerator/unpack.sh RECORDS.tar.gz [DEST, default results/records]
# All or nothing: a member that is not a top-level *.json file, or a record that differs from a
# file of the same name in DEST, stops it before anything is written. Identical files are skipped.
set -euo pipefail

die() { echo "unpack.sh: error: $1" >&2; exit "${2:-1}"; }  # exit 2: bad input; 1: a record differs
[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: unpack.sh RECORDS.tar.gz [DEST]" 2
archive=$1
dest=${2:-$(cd "$(dirname "$0")/../.." && pwd)/results/records}
[ -f "$archive" ] || die "$archive: no such file" 2
[ ! -e "$dest" ] || [ -d "$dest" ] || die "$dest: not a folder (DEST: where the records go)" 2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -tzf "$archive" >"$tmp/members" 2>/dev/null || die "$archive: not a gzipped tar archive" 2
# names only: no folders, no paths, no hidden or temp files (what run.sh packs)
bad=$(grep -v -E '^[A-Za-z0-9][A-Za-z0-9_.+-]*\.json$' "$tmp/members" | head -1 || true)
[ -z "$bad" ] || die "$archive holds '$bad', not a record (expected top-level *.json files only)" 2
mkdir "$tmp/x"
tar -xzf "$archive" -C "$tmp/x" --no-same-owner --no-same-permissions

new=() same=() differ=()
while read -r name; do
    [ -f "$tmp/x/$name" ] && [ ! -L "$tmp/x/$name" ] || die "$archive: $name is not a plain file" 2
    if [ ! -e "$dest/$name" ]; then
        new+=("$name")
    elif cmp -s "$tmp/x/$name" "$dest/$name"; then
        same+=("$name")
    else
        differ+=("$name")
    fi
done <"$tmp/members"
((${#differ[@]} == 0)) ||
    die "${#differ[@]} record(s) differ from those already in $dest (${differ[*]:0:3}${differ[3]:+ ...}); nothing was written"

mkdir -p "$dest"
for name in "${new[@]}"; do
    cp "$tmp/x/$name" "$dest/.$name.tmp" && mv "$dest/.$name.tmp" "$dest/$name"  # atomic, as dfarun writes
done
echo "unpack.sh: ${#new[@]} new record(s) into $dest, ${#same[@]} already there"
