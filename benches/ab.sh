#!/usr/bin/env bash
# Compares two credwatch binaries on one file by running them AT THE SAME
# TIME, so that the drift of a shared machine (the same binary can take
# 2.2 s or 3.0 s minutes apart) hits both alike. Prints, per round, A's and
# B's wall seconds and B/A, then the median B/A. Two copies of the same
# binary gave medians of 0.98-1.00, single rounds within ±5 %.
#
#   benches/ab.sh OLD NEW [ROUNDS] [THREADS] [FILE]
#
# THREADS=1 (the default) pins each binary to its own core and swaps the
# cores every round. THREADS=2 runs both unpinned (four judges on the two
# cores). The config is $CFG (default /tmp/pw/credwatch.toml, with FILE
# /tmp/pw/events.jsonl: `credwatch generate --out /tmp/pw --accounts
# 1000000 --logins 3`). Build OLD, e.g.: `git stash; cargo build --release;
# cp target/release/credwatch /tmp/old; git stash pop`.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
a=$1 b=$2 rounds=${3:-6} threads=${4:-1} file=${5:-/tmp/pw/events.jsonl}
cfg=${CFG:-/tmp/pw/credwatch.toml}
for f in "$a" "$b" "$file" "$cfg"; do
  [ -e "$f" ] || { echo "benches/ab.sh: $f does not exist" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # binary, core (or "" unpinned), time file
  local pin=()
  [ -n "$2" ] && pin=(taskset -c "$2")
  /usr/bin/time -o "$3" -f "%e" "${pin[@]}" "$1" replay --config "$cfg" \
    --threads "$threads" "$file" >/dev/null 2>&1
}
for i in $(seq 1 "$rounds"); do
  ca="" cb=""
  if [ "$threads" = 1 ]; then ca=$((i % 2)) cb=$(((i + 1) % 2)); fi
  run "$a" "$ca" "$tmp/a" &
  run "$b" "$cb" "$tmp/b" &
  wait
  ta=$(cat "$tmp/a") tb=$(cat "$tmp/b")
  echo "$ta $tb $(awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.3f", b / a }')"
done | tee "$tmp/rounds"
sort -n -k3 "$tmp/rounds" | awk '{ r[NR] = $3 } END { print "median B/A:", r[int((NR + 1) / 2)] }'
