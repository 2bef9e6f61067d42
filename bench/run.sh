#!/bin/sh
# SPDX-License-Identifier: MIT
# Run every benchmark program in DIR (default build/bench) one after the
# other; their markdown goes to stdout and to DIR/results.md.  Benchmarks
# never fail on speed: the exit status is non-zero only when a program
# could not run.
dir=${1:-build/bench}
out=$dir/results.md
tmp=$out.tmp
rc=0

if [ ! -d "$dir" ]; then
	echo "bench/run.sh: no directory $dir (make bench-build)" >&2
	exit 1
fi
: > "$tmp"
for prog in "$dir"/*; do
	case $prog in
	*.md | *.tmp | *.status) continue ;;
	esac
	if [ ! -f "$prog" ] || [ ! -x "$prog" ]; then
		continue
	fi
	# keep the program's status out of the pipe (POSIX sh has no pipefail)
	{ "$prog"; echo $? > "$tmp.status"; } | tee -a "$tmp"
	st=$(cat "$tmp.status")
	rm -f "$tmp.status"
	if [ "$st" != 0 ]; then
		echo "bench/run.sh: $prog exited with status $st" >&2
		rc=1
	fi
	echo >> "$tmp"
done
{
	echo "<!-- $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm) -->"
	echo
	cat "$tmp"
} > "$out"
rm -f "$tmp"
echo "bench/run.sh: results in $out" >&2
exit $rc
