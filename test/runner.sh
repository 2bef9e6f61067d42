#!/bin/sh
# Run every test program in DIR (TAP output), each with a timeout, and
# count TAP results: "N passed, N failed, N skipped".  POSIX sh, so the
# same runner works inside the busybox initramfs of the qemu kernels.
#   SOFTDIRTY_TEST_TIMEOUT  seconds per program (default 300)
#   SOFTDIRTY_TEST_FILTER   run only programs whose name contains this
dir=${1:?usage: runner.sh DIR}
timeout_s=${SOFTDIRTY_TEST_TIMEOUT:-300}
logdir=${SOFTDIRTY_TEST_LOGS:-$dir/../test-logs}
mkdir -p "$logdir"
pass=0 fail=0 skip=0
failed_names=""
todo_names=""
for t in "$dir"/*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	name=${t##*/}
	case "$name" in *"${SOFTDIRTY_TEST_FILTER:-}"*) ;; *) continue ;; esac
	log="$logdir/$name.log"
	start=$(date +%s)
	timeout "$timeout_s" "$t" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	p=$(grep -c '^ok ' "$log" | head -n1)
	s=$(grep -c '^ok .*# *[Ss][Kk][Ii][Pp]' "$log" | head -n1)
	f=$(grep -c '^not ok ' "$log" | head -n1)
	# "not ok ... # TODO": a known defect, listed, not counted as failed
	todo=$(grep -c '^not ok .*# *TODO' "$log" | head -n1)
	f=$((f - todo))
	p=$((p - s))
	status=ok
	if [ $rc -eq 77 ] && [ $f -eq 0 ]; then
		[ $p -eq 0 ] && [ $s -eq 0 ] && s=1
		status=skip
	elif [ $rc -eq 124 ]; then
		f=$((f + 1)); status="TIMEOUT after ${timeout_s}s"
	elif [ $rc -ne 0 ] && [ $f -eq 0 ]; then
		f=$((f + 1)); status="exit $rc without a failed assertion (crash?)"
	elif [ $f -ne 0 ]; then
		status=FAIL
	elif [ $p -eq 0 ] && [ $s -eq 0 ]; then
		f=$((f + 1)); status="no TAP result"
	fi
	printf '%-28s %-6s %3d passed %3d failed %3d skipped  %3ds\n' \
		"$name" "$status" "$p" "$f" "$s" "$secs"
	if [ "$status" != ok ] && [ "$status" != skip ]; then
		failed_names="$failed_names $name"
		grep -E '^not ok|^# ' "$log" | head -n 40 | sed 's/^/    /'
		[ $rc -ne 0 ] && tail -n 5 "$log" | sed 's/^/    | /'
	fi
	if [ "$todo" -gt 0 ]; then
		grep '^not ok .*# *TODO' "$log" | sed 's/^/    known defect: /'
		todo_names="$todo_names $name"
	fi
	pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s + todo))
done
[ -n "$todo_names" ] && echo "known defects (TODO, counted as skipped):$todo_names"
[ -n "$failed_names" ] && echo "failed:$failed_names (logs in $logdir)"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
