#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Linux 6.1's own soft-dirty selftest (tools/testing/selftests/vm/
# soft-dirty.c + vm_util.c), taken at test time from Debian's
# linux-source-6.1 (never copied into this repository), built dynamically
# and run unmodified:
#   - without the shim: on a kernel without CONFIG_MEM_SOFT_DIRTY it must
#     skip ("soft-dirty is not support"); with it, it must pass;
#   - with LD_PRELOAD=libsoftdirty-preload.so: every check must pass;
#   - through `softdirty run --` when that tool is next to the library.
# TAP on stdout.
#
# Environment:
#   SOFTDIRTY_PRELOAD         the .so (default: ../libsoftdirty-preload.so
#                             next to this script's directory)
#   SOFTDIRTY_SELFTEST_CACHE  where the extracted, built selftest is kept
#                             (default: ../selftest-dyn)
#   SOFTDIRTY_SELFTEST_BIN    a dynamically linked build of it to use as is
#                             (the qemu VMs: no compiler, no tarball there)
#   SOFTDIRTY_TOOL            the softdirty command (default: ../softdirty)
#   CC                        compiler (default: gcc)
here=$(cd "$(dirname "$0")" && pwd)
so=${SOFTDIRTY_PRELOAD:-$here/../libsoftdirty-preload.so}
cache=${SOFTDIRTY_SELFTEST_CACHE:-$here/../selftest-dyn}
tool=${SOFTDIRTY_TOOL:-$here/../softdirty}
tarball=/usr/src/linux-source-6.1.tar.xz
CC=${CC:-gcc}
n=0
failed=0

ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
skip_all() { echo "1..0 # SKIP $*"; exit 77; }
bail() { echo "Bail out! $*"; exit 1; }

# The static copy of the suite runs in a busybox initramfs: no loader
# unless test/qemu copied one in (with the shim and a dynamic build of the
# selftest, SOFTDIRTY_SELFTEST_BIN), else nothing to preload into.
[ -e /lib64/ld-linux-x86-64.so.2 ] || [ -e /lib/ld-linux-aarch64.so.1 ] ||
	skip_all "no dynamic loader here: LD_PRELOAD cannot apply"
[ -f "$so" ] || bail "$so not found (set SOFTDIRTY_PRELOAD)"
so=$(cd "$(dirname "$so")" && pwd)/$(basename "$so")

if [ -n "${SOFTDIRTY_SELFTEST_BIN:-}" ]; then
	bin=$SOFTDIRTY_SELFTEST_BIN
	ver=prebuilt
	[ -x "$bin" ] || bail "SOFTDIRTY_SELFTEST_BIN=$bin is not executable"
else
	if [ ! -r "$tarball" ]; then
		# the project's suite installs its own dependencies (scripts/deps.sh)
		if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends linux-source-6.1 </dev/null \
				>&2 || bail "apt-get install linux-source-6.1 failed"
		fi
		[ -r "$tarball" ] || bail "$tarball missing: apt-get install linux-source-6.1"
	fi
	command -v "$CC" >/dev/null 2>&1 || bail "no compiler ($CC)"

	ver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || echo unknown)
	dir=$cache/linux-source-6.1_$ver
	bin=$dir/soft-dirty
	if [ ! -x "$bin" ] || [ -n "$(find "$tarball" -newer "$bin" 2>/dev/null)" ]; then
		top=linux-source-6.1/tools/testing/selftests
		rm -rf "$dir.tmp"
		mkdir -p "$dir.tmp/src" || bail "cannot create $dir.tmp"
		tar -xJf "$tarball" -C "$dir.tmp/src" "$top/kselftest.h" \
			"$top/vm/soft-dirty.c" "$top/vm/vm_util.c" "$top/vm/vm_util.h" ||
			bail "cannot extract the soft-dirty selftest from $tarball"
		src=$dir.tmp/src/$top/vm
		# dynamic on purpose: LD_PRELOAD does nothing to a static binary
		"$CC" -O2 -g -Wall -I"$src/.." -o "$dir.tmp/soft-dirty" \
			"$src/soft-dirty.c" "$src/vm_util.c" >&2 ||
			bail "building the soft-dirty selftest failed"
		rm -rf "$dir"
		mv "$dir.tmp" "$dir" || bail "cannot create $dir"
	fi
fi
echo "# selftest: $bin (linux-source-6.1 $ver)"

# It writes ./soft-dirty-test-file: run it in a scratch directory.
work=$(mktemp -d) || bail "mktemp failed"
trap 'rm -rf "$work"' EXIT

# check_run LABEL LOG RC: every selftest result a line of ours
check_run() {
	label=$1 log=$2 rc=$3
	grep -E '^(ok|not ok) [0-9]+ ' "$log" | while IFS= read -r line; do
		case "$line" in
		"not ok"*) echo "not ok - $label: ${line#not ok [0-9]* }" ;;
		*) echo "ok - $label: ${line#ok [0-9]* }" ;;
		esac
	done > "$work/lines"
	while IFS= read -r line; do
		case "$line" in
		"not ok - "*) notok "${line#not ok - }" ;;
		*) ok "${line#ok - }" ;;
		esac
	done < "$work/lines"
	if [ "$rc" -eq 0 ] && grep -q '^# Totals: pass:15 fail:0 ' "$log"; then
		ok "$label: all 15 checks pass (exit 0)"
	else
		notok "$label: exit $rc, $(grep '^# Totals' "$log" || echo 'no totals')"
		sed 's/^/#   /' "$log" | tail -n 20
	fi
}

(cd "$work" && "$bin") > "$work/plain.log" 2>&1
rc=$?
if grep -q 'SKIP soft-dirty is not support' "$work/plain.log"; then
	kernel_sd=0
	ok "without the shim the selftest skips: soft-dirty is not support (exit $rc)"
else
	kernel_sd=1
	echo "# this kernel has soft-dirty: the shim must step aside"
	check_run "kernel, no shim" "$work/plain.log" "$rc"
fi

(cd "$work" && LD_PRELOAD=$so "$bin") > "$work/shim.log" 2>&1
check_run "LD_PRELOAD shim" "$work/shim.log" $?

# the preload must not leak into what the selftest prints
if grep -v -E '^(TAP version|1\.\.|ok |not ok |# )' "$work/shim.log" |
		grep -q .; then
	notok "the shim printed nothing of its own"
	grep -v -E '^(TAP version|1\.\.|ok |not ok |# )' "$work/shim.log" |
		sed 's/^/#   /' | head -n 10
else
	ok "the shim printed nothing of its own"
fi

if [ -x "$tool" ] && "$tool" run -- true >/dev/null 2>&1; then
	(cd "$work" && SOFTDIRTY_PRELOAD=$so "$tool" run -- "$bin") \
		> "$work/run.log" 2>&1
	check_run "softdirty run" "$work/run.log" $?
else
	n=$((n + 1))
	echo "ok $n - softdirty run -- selftest # SKIP no 'softdirty run' at $tool"
fi
[ $kernel_sd -eq 1 ] && echo "# kernel soft-dirty present: shim stepped aside"

echo "1..$n"
[ $failed -eq 0 ]
