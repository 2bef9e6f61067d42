#!/bin/bash
# The whole suite: the tests built with gcc, with clang (both -Werror),
# and with ASan+UBSan, on this host; then inside real soft-dirty kernels
# under qemu (test/qemu).  Ends with the summed "N passed, N failed, N
# skipped".  --host-only skips the qemu part.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILDDIR:-build}
host_only=0
[ "${1:-}" = --host-only ] && host_only=1
total_p=0 total_f=0 total_s=0
summary=()

tally() {	# name logfile
	local line p f s
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$2" | tail -n1)
	if [ -z "$line" ]; then
		summary+=("$1: no result (see $2)")
		total_f=$((total_f + 1))
		return
	fi
	p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
	f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
	s=$(echo "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')
	total_p=$((total_p + p)); total_f=$((total_f + f))
	total_s=$((total_s + ${s:-0}))
	summary+=("$1: $line")
}

run_host() {	# name make-args...
	local name=$1; shift
	local log=$BUILD/$name.log
	mkdir -p "$BUILD"
	echo "=== $name: build and test"
	if ! make -s -j2 BUILDDIR="$BUILD/$name" WERROR=1 "$@" all >"$log" 2>&1; then
		cat "$log"
		summary+=("$name: BUILD FAILED")
		total_f=$((total_f + 1))
		return
	fi
	sh test/runner.sh "$BUILD/$name/test" 2>&1 | tee -a "$log"
	tally "$name" "$log"
}

start=$(date +%s)
# What this project's machines are known to have (6.18: no soft-dirty, uffd
# WP_ASYNC and PAGEMAP_SCAN); probe-expect checks softdirty_probe() against
# it.  Override on another host.
export SOFTDIRTY_EXPECT=${SOFTDIRTY_HOST_EXPECT:-nosd,scan,wpasync}
run_host gcc CC=gcc
run_host clang CC=clang
# ASan reserves terabytes of shadow; the tests are slower (2-4x), not
# different, so they get a longer per-program timeout.
SOFTDIRTY_TEST_TIMEOUT=${SOFTDIRTY_TEST_TIMEOUT:-480} \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
run_host asan CC=clang SAN=1 CFLAGS="-O1 -g"

# What users touch besides the API: install, pkg-config, man pages.
step() {	# name command...
	local name=$1; shift
	if "$@" >"$BUILD/$name.log" 2>&1; then
		summary+=("$name: 1 passed, 0 failed"); total_p=$((total_p + 1))
	else
		cat "$BUILD/$name.log"
		summary+=("$name: 0 passed, 1 failed (see $BUILD/$name.log)")
		total_f=$((total_f + 1))
	fi
}
echo "=== install, pkg-config, man pages"
step install sh test/install-check.sh "$BUILD/install"
step man sh man/check.sh

if [ $host_only = 0 ]; then
	unset SOFTDIRTY_EXPECT
	log=$BUILD/kernels.log
	echo "=== qemu: the same tests inside Debian's soft-dirty kernels"
	make -s BUILDDIR="$BUILD" check-kernels 2>&1 | tee "$log"
	tally kernels "$log"
fi

echo
echo "=== summary ($(( $(date +%s) - start ))s)"
printf '  %s\n' "${summary[@]}"
echo "$total_p passed, $total_f failed, $total_s skipped"
[ $total_f -eq 0 ]
