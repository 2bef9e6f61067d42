#!/bin/bash
# Usage: test/qemu/build-selftest.sh BUILD_DIR [dynamic]
#
# Builds Linux 6.1's own soft-dirty selftest
# (tools/testing/selftests/vm/soft-dirty.c + vm_util.[ch] + kselftest.h),
# taken at test time from Debian's linux-source-6.1 package (never copied into
# this repository), as a static executable cached under
# BUILD_DIR/selftest/<package version>/ (with "dynamic": dynamically linked,
# for LD_PRELOAD, under BUILD_DIR/selftest-dyn/). Prints the path of the
# binary on stdout; everything else goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

[ $# -eq 1 ] || [ $# -eq 2 ] && [ "${2:-dynamic}" = dynamic ] ||
	{ echo "usage: $0 BUILD_DIR [dynamic]" >&2; exit 2; }
build_dir=$1
link=-static sub=selftest
[ $# -eq 2 ] && link="" sub=selftest-dyn
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)

ensure_packages linux-source-6.1 xz-utils gcc libc6-dev

tarball=/usr/src/linux-source-6.1.tar.xz
[ -r "$tarball" ] || qdie "$tarball not found (package linux-source-6.1)"
ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
out_dir=$build_dir/$sub/linux-source-6.1_$ver
bin=$out_dir/soft-dirty
CC=${CC:-gcc}

if [ -x "$bin" ] && [ "$bin" -nt "$tarball" ]; then
	echo "$bin"
	exit 0
fi

top=linux-source-6.1/tools/testing/selftests
members=("$top/kselftest.h" "$top/vm/soft-dirty.c" "$top/vm/vm_util.c"
	 "$top/vm/vm_util.h")
rm -rf "$out_dir.tmp"
mkdir -p "$out_dir.tmp/src"
qlog "extracting soft-dirty selftest from $tarball ($ver)"
tar -xJf "$tarball" -C "$out_dir.tmp/src" "${members[@]}" ||
	qdie "cannot extract ${members[*]} from $tarball"
src=$out_dir.tmp/src/$top/vm
qlog "building $bin (${link:-dynamic})"
# shellcheck disable=SC2086
$CC $link -O2 -g -Wall -I"$src/.." -o "$out_dir.tmp/soft-dirty" \
	"$src/soft-dirty.c" "$src/vm_util.c" >&2 ||
	qdie "building the soft-dirty selftest failed"
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
echo "$bin"
