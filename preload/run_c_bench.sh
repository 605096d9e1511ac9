#!/usr/bin/env bash
# Times one program (any C program, or anything else that uses malloc) under every allocator:
# system malloc (glibc), Debian's mimalloc and jemalloc (if installed: apt-get install
# libmimalloc2.0 libjemalloc2), and each lib<name>_preload.so of this repository, via LD_PRELOAD.
# Reports the median wall time and the median peak RSS (/usr/bin/time -v's "Maximum resident set
# size") over the repeats as a Markdown table, with ratios to system malloc. Runs are interleaved
# across allocators (round robin), so slow drift of the machine hits every allocator alike.
#
# Usage: preload/run_c_bench.sh [-n REPEATS] [-l EXTRA.so]... [-i INPUT_FILE] -- PROGRAM [ARGS...]
#   -n  repeats per allocator (default 5)
#   -l  one more library to preload (repeatable), e.g. a build from another checkout
#   -i  file fed to the program's standard input
# The preload libraries are taken from $CARGO_TARGET_DIR/release (default: target/release); build
# them first with `cargo build --release`. The program's output goes to /dev/null.
set -euo pipefail

repeats=5
extra=()
input=/dev/null
while getopts "n:l:i:" opt; do
  case $opt in
    n) repeats=$OPTARG ;;
    l) extra+=("$OPTARG") ;;
    i) input=$OPTARG ;;
    *) sed -n '2,16p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

names=(system)
libs=("")
for lib in /usr/lib/x86_64-linux-gnu/libmimalloc.so.2 /usr/lib/*/libmimalloc.so.2; do
  [ -e "$lib" ] && { names+=(mimalloc); libs+=("$lib"); break; }
done
for lib in /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 /usr/lib/*/libjemalloc.so.2; do
  [ -e "$lib" ] && { names+=(jemalloc); libs+=("$lib"); break; }
done
for lib in "$target"/release/lib*_preload.so "${extra[@]}"; do
  [ -e "$lib" ] || continue
  name=$(basename "$lib" .so); name=${name#lib}; name=${name%_preload}
  names+=("$name"); libs+=("$lib")
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Round robin: every allocator once per round.
for ((r = 0; r < repeats; r++)); do
  for i in "${!names[@]}"; do
    log="$tmp/$i.$r"
    if ! /usr/bin/time -v -o "$log" env LD_PRELOAD="${libs[$i]}" "$@" <"$input" >/dev/null 2>"$tmp/err"; then
      echo "${names[$i]}: the program failed:" >&2; tail -5 "$tmp/err" >&2; tail -3 "$log" >&2
      echo "FAILED" >"$log"
    fi
  done
done

# Median of a column of numbers.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# Elapsed "h:mm:ss" or "m:ss.cc" to seconds.
seconds() { awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }'; }

echo "program: $* ($repeats runs each, medians; $(nproc) CPUs, $(uname -r))"
echo
echo "| allocator | wall s | peak RSS MiB | wall / system | RSS / system |"
echo "|---|---:|---:|---:|---:|"
base_wall="" base_rss=""
for i in "${!names[@]}"; do
  if grep -qs FAILED "$tmp/$i".*; then
    echo "| ${names[$i]} | failed | | | |"
    continue
  fi
  wall=$(for f in "$tmp/$i".*; do grep "Elapsed (wall clock)" "$f" | awk '{ print $NF }' | seconds; done | median)
  rss=$(for f in "$tmp/$i".*; do grep "Maximum resident set size" "$f" | awk '{ print $NF }'; done | median)
  [ -z "$base_wall" ] && { base_wall=$wall; base_rss=$rss; }
  awk -v n="${names[$i]}" -v w="$wall" -v m="$rss" -v bw="$base_wall" -v bm="$base_rss" \
    'BEGIN { printf "| %s | %.2f | %.1f | %.2f | %.2f |\n", n, w, m / 1024, w / bw, m / bm }'
done
