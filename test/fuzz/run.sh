#!/bin/sh
# Fuzz the image reader for SECONDS (default 600), starting from small
# valid images (mkseed) and the kept corpus, then merge what was found
# into a minimized test/fuzz/corpus (run by test/image-corpus in the suite).
# Usage: sh test/fuzz/run.sh BUILD/fuzz [SECONDS]
set -e
dir=${1:?usage: run.sh BUILD/fuzz [SECONDS]}
secs=${2:-600}
here=$(cd "$(dirname "$0")" && pwd)
work=$dir/work
rm -rf "$work"
mkdir -p "$work/seeds" "$work/new"
"$dir/mkseed" "$work/seeds"
cp "$work/seeds/full/memory.sdimg" "$work/new/seed-full"
cp "$work/seeds/incr/memory.sdimg" "$work/new/seed-incr"
cp "$here"/corpus/* "$work/new/" 2>/dev/null || true
"$dir/image-fuzz" -max_total_time="$secs" -max_len=65536 -timeout=10 \
	-rss_limit_mb=2048 -print_final_stats=1 "$work/new" 2>&1 |
	tail -n 30
mkdir -p "$work/min"
"$dir/image-fuzz" -merge=1 -max_len=65536 "$work/min" "$work/new" 2>&1 | tail -n 2
rm -f "$here"/corpus/*
cp "$work/min"/* "$here/corpus/"
echo "corpus: $(ls "$here/corpus" | wc -l) files in test/fuzz/corpus"
