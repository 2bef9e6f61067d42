#!/bin/sh
# SPDX-License-Identifier: MIT
# `make demo`: the bundled workload (examples/demo.c) checked against every
# working backend, then watched as a process of its own with softdirty
# watch, then dumped incrementally with softdirty dump.  Stops by itself.
set -e
B=${1:-build}
out=$B/demo-out
rm -rf "$out"
mkdir -p "$out"

"$B/examples/demo"

echo
echo "== softdirty watch: the same workload as a process of its own, 3 s"
"$B/softdirty" watch --interval 500 --heatmap "$out/heatmap.svg" -- \
	"$B/examples/demo" --workload 3
echo "heatmap (open in a browser): $out/heatmap.svg"

echo
echo "== softdirty dump: a full image, then two increments, 1 s apart"
"$B/examples/demo" --workload 10 &
pid=$!
sleep 1.5
"$B/softdirty" dump "$pid" -D "$out/d0"
sleep 1
"$B/softdirty" dump "$pid" -D "$out/d1" --parent "$out/d0"
sleep 1
"$B/softdirty" dump "$pid" -D "$out/d2" --parent "$out/d1"
"$B/softdirty" image inspect "$out/d2"
"$B/softdirty" image verify "$out/d2"
wait "$pid"
