#!/bin/sh
# SPDX-License-Identifier: MIT
# `make demo`: the bundled workload (examples/demo.c) checked against every
# working backend, then watched as a process of its own with softdirty
# watch, then dumped incrementally with softdirty dump (a tracked series,
# then one increment by contents).  Stops by itself.
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
echo "== softdirty dump: a full image, then two increments, 1 s apart, with one"
echo "   tracker open (only the pages written are copied while it is stopped)"
"$B/examples/demo" --workload 10 &
pid=$!
sleep 1.5
"$B/softdirty" dump "$pid" -D "$out/series" --every 1000 --count 3
echo
echo "== and one more increment by contents against the last (a separate run)"
"$B/softdirty" dump "$pid" -D "$out/d3" --parent "$out/series/2"
"$B/softdirty" image inspect "$out/d3" | sed -n '1,12p'
"$B/softdirty" image verify "$out/d3"
wait "$pid"
