#!/bin/sh
# Render every man page in this directory and fail on any warning.
# Usage: sh man/check.sh   (from anywhere; needs man-db and groff)
dir=$(cd "$(dirname "$0")" && pwd)
fail=0
n=0
export LC_ALL=C.UTF-8 MANWIDTH=80

for cmd in man groff; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		echo "check.sh: $cmd not found (install man-db and groff)" >&2
		exit 2
	fi
done

for page in "$dir"/*.[1-8]; do
	[ -e "$page" ] || continue
	n=$((n + 1))
	name=$(basename "$page")
	first=$(head -n 1 "$page")
	case $first in
	.so\ *)
		# a link page: its target must exist here; it is checked itself
		target=$(basename "${first#.so }")
		if [ ! -f "$dir/$target" ]; then
			echo "FAIL $name: .so target $target missing" >&2
			fail=1
		fi
		continue
		;;
	esac
	out=$(man --warnings -l "$page" 2>&1 >/dev/null)
	rc=$?
	if [ $rc -ne 0 ] || [ -n "$out" ]; then
		printf 'FAIL %s (man --warnings, rc %s):\n%s\n' "$name" "$rc" "$out" >&2
		fail=1
	fi
	out=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
	rc=$?
	if [ $rc -ne 0 ] || [ -n "$out" ]; then
		printf 'FAIL %s (groff -ww, rc %s):\n%s\n' "$name" "$rc" "$out" >&2
		fail=1
	fi
done

if [ $n -eq 0 ]; then
	echo "check.sh: no man pages in $dir" >&2
	exit 1
fi
[ $fail -eq 0 ] && echo "check.sh: $n man pages, no warnings"
exit $fail
