#!/bin/bash
# Usage: test/qemu/run-kernels.sh BUILD_DIR TEST_BIN_DIR [KERNEL...]
#
# Boots Debian's cloud-amd64 kernels (which have CONFIG_MEM_SOFT_DIRTY) under
# qemu-system-x86_64 (TCG, no KVM needed) with a tiny initramfs: busybox-static,
# every executable in TEST_BIN_DIR, the harness's own probe (kprobe.c) and
# Linux 6.1's soft-dirty selftest. Results are read back from the serial
# console, TAP is counted per test and per kernel, and the last line printed is
# "N passed, N failed, N skipped". Exit status 1 if anything failed, 2 on a
# setup error.
#
# KERNEL: 6.1 and/or 6.12 (default: both).
#
# Environment:
#   QEMU_TIMEOUT=SECS       wall clock per kernel, boot included (default 480)
#   TEST_TIMEOUT=SECS       per test inside the VM, then SIGKILL (default 90)
#   QEMU_MEM=MiB            guest memory (default 2048: tests map 1 GiB)
#   QEMU_SMP=N              guest CPUs (default 2)
#   QEMU_ACCEL=...          qemu -accel value (default tcg,thread=multi;
#                           kvm implies -cpu host)
#   SOFTDIRTY_EXPECT_6_1    what kprobe must find on 6.1
#                           (default sd,noscan,nowpasync)
#   SOFTDIRTY_EXPECT_6_12   ... on 6.12 (default sd,scan,wpasync)
#   KERNEL_DEB_6_1, KERNEL_DEB_6_12
#                           use this kernel .deb instead of the newest in apt
#   VERBOSE=1               print every test's output, not only failing ones
#   SOFTDIRTY_TEST_*        passed on to the tests in the VM; there
#                           SOFTDIRTY_TEST_QUICK defaults to 1 (TCG is slow)
#   QEMU_EXTRA_APPEND       more kernel command line
#   QEMU_DYNAMIC            dynamically linked test programs, run as
#                           NAME-dyn (their static twins keep NAME); the
#                           loader and the libraries ldd lists go along
#   QEMU_TOOL               the softdirty command (static): put at
#                           /softdirty, ../softdirty from /tests (watch-exact
#                           and the image tests run it)
#   QEMU_PRELOAD            libsoftdirty-preload.so: put at
#                           /libsoftdirty-preload.so (../ from /tests, where
#                           the tests look), with Linux 6.1's selftest built
#                           dynamically for it (SOFTDIRTY_SELFTEST_BIN)
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

usage() {
	echo "usage: $0 BUILD_DIR TEST_BIN_DIR [6.1] [6.12]" >&2
	exit 2
}
[ $# -ge 2 ] || usage
build_dir=$1
test_bin_dir=$2
shift 2
kernels=("$@")
[ ${#kernels[@]} -gt 0 ] || kernels=(6.1 6.12)
for k in "${kernels[@]}"; do
	case $k in 6.1|6.12) ;; *) qlog "unknown kernel '$k'"; usage ;; esac
done
[ -d "$test_bin_dir" ] || qdie "TEST_BIN_DIR '$test_bin_dir' is not a directory"
test_bin_dir=$(cd "$test_bin_dir" && pwd)
mkdir -p "$build_dir" || qdie "cannot create $build_dir"
build_dir=$(cd "$build_dir" && pwd)

QEMU_TIMEOUT=${QEMU_TIMEOUT:-480}
TEST_TIMEOUT=${TEST_TIMEOUT:-90}
QEMU_MEM=${QEMU_MEM:-2048}
QEMU_SMP=${QEMU_SMP:-2}
# TCG by default: this project's machines have a /dev/kvm that cannot run
# guests (nested KVM fails on MSR 0x10a), so never pick KVM on our own.
accel=${QEMU_ACCEL:-tcg,thread=multi}
case $accel in kvm*) cpu=host ;; *) cpu=max ;; esac
VERBOSE=${VERBOSE:-0}
: "${SOFTDIRTY_EXPECT_6_1:=sd,noscan,nowpasync}"
: "${SOFTDIRTY_EXPECT_6_12:=sd,scan,wpasync}"

t_script=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- packages
ensure_packages qemu-system-x86 busybox-static cpio gzip xz-utils \
	linux-source-6.1 gcc libc6-dev
command -v qemu-system-x86_64 >/dev/null || qdie "qemu-system-x86_64 not found"
busybox=/bin/busybox
[ -x "$busybox" ] || qdie "$busybox (busybox-static) not found"
is_dynamic() { command -v file >/dev/null && file -L "$1" | grep -q 'dynamically linked'; }
is_dynamic "$busybox" &&
	qdie "$busybox is dynamically linked: need busybox-static"

# ---------------------------------------------------------------- kernels
# newest_candidate REGEX: among apt package names matching REGEX that have an
# installable candidate, print "NAME VERSION" of the highest version.
newest_candidate() {
	local re=$1 prefix=$2 names best_n="" best_v="" n v
	names=$(apt-cache pkgnames "$prefix" 2>/dev/null | grep -E "$re" | sort -u)
	[ -n "$names" ] || return 1
	while read -r n v; do
		if [ -z "$v" ] || [ "$v" = "(none)" ]; then continue; fi
		if [ -z "$best_v" ] || dpkg --compare-versions "$v" gt "$best_v" ||
			{ dpkg --compare-versions "$v" eq "$best_v" &&
			  [ "$(printf '%s\n%s\n' "$best_n" "$n" | sort -V | tail -1)" = "$n" ]; }; then
			best_n=$n
			best_v=$v
		fi
	done < <(# shellcheck disable=SC2086
		 apt-cache policy $names 2>/dev/null |
		 awk '/^[^ ].*:$/ { n = substr($0, 1, length($0) - 1) }
		      /^  Candidate:/ { print n, $2 }')
	[ -n "$best_n" ] || return 1
	echo "$best_n $best_v"
}

# download_deb NAME VERSION DIR: apt-get download, sandboxed as _apt if we can.
download_deb() {
	local name=$1 ver=$2 dir=$3 tmp rc
	tmp=$(mktemp -d "$dir/.download.XXXXXX") || return 1
	if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
		chown _apt "$tmp" 2>/dev/null || true
	fi
	(cd "$tmp" && apt-get download -q "$name=$ver" </dev/null >&2)
	rc=$?
	if [ $rc -eq 0 ]; then
		mv -f "$tmp"/*.deb "$dir"/ || rc=1
	else
		qlog "apt-get download $name=$ver failed"
	fi
	rm -rf "$tmp"
	return $rc
}

apt_updated=0
# fetch_kernel SERIES: sets kdir (extracted package root), kname, kver.
fetch_kernel() {
	local series=$1 var re prefix sel deb cache=$build_dir/cache
	var=KERNEL_DEB_${series//./_}
	mkdir -p "$cache"
	if [ -n "${!var:-}" ]; then
		deb=${!var}
		[ -r "$deb" ] || { qlog "$var=$deb: not readable"; return 1; }
		if ! kname=$(dpkg-deb -f "$deb" Package) || ! kver=$(dpkg-deb -f "$deb" Version); then
			qlog "$deb: not a .deb"
			return 1
		fi
	else
		case $series in
		6.1)  prefix=linux-image-6.1.0-
		      re='^linux-image-6\.1\.0-[0-9]+-cloud-amd64' ;;
		6.12) prefix=linux-image-6.12.
		      re='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64' ;;
		esac
		sel=$(newest_candidate "$re-unsigned\$" "$prefix") ||
			sel=$(newest_candidate "$re\$" "$prefix") || sel=""
		if [ -z "$sel" ] && [ "$apt_updated" = 0 ] && [ "$(id -u)" -eq 0 ]; then
			# Package lists missing or stale (fresh container): refresh once.
			apt_updated=1
			qlog "$series: no candidate in the package lists; running apt-get update"
			env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 || true
			sel=$(newest_candidate "$re-unsigned\$" "$prefix") ||
				sel=$(newest_candidate "$re\$" "$prefix") || sel=""
		fi
		if [ -z "$sel" ]; then
			# Offline or stale lists: fall back to the newest cached .deb.
			deb=$(find "$cache" -maxdepth 1 -name '*.deb' -printf '%f\n' |
			      grep -E "${re#^}(-unsigned)?_.*_amd64\.deb\$" | sort -V | tail -1)
			[ -n "$deb" ] || { qlog "no $series cloud-amd64 kernel package in apt nor in $cache"; return 1; }
			deb=$cache/$deb
			qlog "$series: apt has no candidate, using cached $deb"
			kname=$(dpkg-deb -f "$deb" Package)
			kver=$(dpkg-deb -f "$deb" Version)
		else
			read -r kname kver <<<"$sel"
			deb=$cache/${kname}_${kver//:/%3a}_amd64.deb
			if [ ! -s "$deb" ]; then
				qlog "$series: downloading $kname $kver"
				download_deb "$kname" "$kver" "$cache" || return 1
				[ -s "$deb" ] || { qlog "download did not produce $deb"; return 1; }
				# Keep one kernel per series in the cache.
				find "$cache" -maxdepth 1 -name '*.deb' -printf '%f\n' |
					grep -E "${re#^}(-unsigned)?_.*_amd64\.deb\$" |
					grep -vxF "$(basename "$deb")" |
					while read -r old; do
						qlog "$series: removing old $old"
						rm -f "$cache/$old"
						rm -rf "$build_dir/kernels/${old%_amd64.deb}"
					done
			else
				qlog "$series: $kname $kver (cached)"
			fi
		fi
	fi
	kdir=$build_dir/kernels/${kname}_$kver
	if [ ! -e "$kdir/.done" ]; then
		rm -rf "$kdir" "$kdir.tmp"
		mkdir -p "$kdir.tmp"
		# Only /boot is needed (vmlinuz, config); skip the modules.
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir.tmp" --wildcards './boot/*' ||
			{ qlog "cannot extract $deb"; return 1; }
		touch "$kdir.tmp/.done"
		mv "$kdir.tmp" "$kdir"
	fi
	return 0
}

# check_config CONFIG_FILE: print the interesting options; fail if the
# plain-initramfs boot needs something that is not built in.
check_config() {
	local cfg=$1 opt val bad=0
	for opt in MEM_SOFT_DIRTY USERFAULTFD HAVE_ARCH_USERFAULTFD_WP PTE_MARKER_UFFD_WP \
		   TRANSPARENT_HUGEPAGE HUGETLBFS; do
		val=$(grep -E "^(# )?CONFIG_${opt}[= ]" "$cfg" || echo "CONFIG_$opt unset")
		qlog "  $val"
	done
	for opt in BLK_DEV_INITRD RD_GZIP BINFMT_ELF BINFMT_SCRIPT SERIAL_8250 \
		   SERIAL_8250_CONSOLE DEVTMPFS PROC_FS SYSFS TMPFS ACPI; do
		if ! grep -qx "CONFIG_$opt=y" "$cfg"; then
			qlog "  CONFIG_$opt is not built in ($(grep -E "CONFIG_${opt}[= ]" "$cfg" || echo unset)): cannot boot a plain initramfs"
			bad=1
		fi
	done
	grep -qx 'CONFIG_MEM_SOFT_DIRTY=y' "$cfg" ||
		qlog "  warning: this kernel has no CONFIG_MEM_SOFT_DIRTY"
	return $bad
}

# ---------------------------------------------------------------- test binaries
kprobe_bin=$build_dir/kprobe
if [ ! -x "$kprobe_bin" ] || [ "$here/kprobe.c" -nt "$kprobe_bin" ]; then
	qlog "building $kprobe_bin"
	${CC:-gcc} -static -O2 -Wall -o "$kprobe_bin" "$here/kprobe.c" ||
		qdie "cannot build kprobe"
fi
selftest_bin=$("$here/build-selftest.sh" "$build_dir") || selftest_bin=""
[[ -n $selftest_bin && -x $selftest_bin ]] ||
	qdie "cannot build the Linux 6.1 soft-dirty selftest"
preload=${QEMU_PRELOAD:-}
selftest_dyn=""
if [ -n "$preload" ]; then
	[ -r "$preload" ] || qdie "QEMU_PRELOAD=$preload: not readable"
	selftest_dyn=$("$here/build-selftest.sh" "$build_dir" dynamic) ||
		qdie "cannot build the Linux 6.1 soft-dirty selftest (dynamic)"
fi

# ---------------------------------------------------------------- initramfs
root=$build_dir/initramfs
initrd=$build_dir/initramfs.cpio.gz
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,tests,etc,root}
cp "$busybox" "$root/bin/busybox"
"$busybox" --list-full | while read -r a; do
	[ "$a" = bin/busybox ] || [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done
[ -e "$root/bin/sh" ] || ln -s busybox "$root/bin/sh"
# Environment for the tests: SOFTDIRTY_TEST_* from the host, QUICK by default.
{
	[ -n "${SOFTDIRTY_TEST_QUICK+set}" ] || echo "export SOFTDIRTY_TEST_QUICK='1'"
	while IFS= read -r v; do
		case $v in SOFTDIRTY_TEST_*) ;; *) continue ;; esac
		val=${!v}
		printf "export %s='%s'\n" "$v" "${val//\'/\'\\\'\'}"
	done < <(compgen -e)
	[ -z "$selftest_dyn" ] ||
		echo "export SOFTDIRTY_SELFTEST_BIN='/opt/selftest-dyn/soft-dirty'"
} >"$root/etc/test-env"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
# The console must exist before devtmpfs is mounted (init's stdio).
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

# copy_libs ELF: the dynamic loader and the libraries ldd resolves for a
# dynamically linked ELF, at the same paths (nothing for static ones).
copy_libs() {
	local lib
	while read -r lib; do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")" &&
			cp -L "$lib" "$root$lib" || qdie "cannot copy $lib (for $1)"
	done < <(ldd "$1" 2>/dev/null |
		 awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) { print $i; break } }')
}

ntests=0
add_test() { # SRC NAME
	install -m 755 "$1" "$root/tests/$2" || qdie "cannot copy test $1"
	copy_libs "$1"
	echo "$2" >>"$root/tests/.list"
	ntests=$((ntests + 1))
}
: >"$root/tests/.list"
add_test "$kprobe_bin" qemu-kprobe
add_test "$selftest_bin" linux-6.1-selftest-soft-dirty
while IFS= read -r -d '' f; do
	n=$(basename "$f")
	case $n in
	qemu-kprobe|linux-6.1-selftest-soft-dirty) qdie "test name $n is reserved" ;;
	*[!A-Za-z0-9._+-]*) qdie "test name '$n': use only [A-Za-z0-9._+-]" ;;
	esac
	add_test "$f" "$n"
done < <(find -L "$test_bin_dir" -maxdepth 1 -type f -perm -u+x -print0 | sort -z)
for f in ${QEMU_DYNAMIC:-}; do
	[ -x "$f" ] || qdie "QEMU_DYNAMIC: $f is not an executable"
	is_dynamic "$f" || qlog "warning: QEMU_DYNAMIC: $f is not dynamically linked"
	add_test "$f" "$(basename "$f")-dyn"
done
if [ -n "${QEMU_TOOL:-}" ]; then
	install -m 755 "$QEMU_TOOL" "$root/softdirty" ||
		qdie "cannot copy $QEMU_TOOL"
	copy_libs "$QEMU_TOOL"
fi
if [ -n "$preload" ]; then
	install -m 644 "$preload" "$root/libsoftdirty-preload.so" &&
		mkdir -p "$root/opt/selftest-dyn" &&
		install -m 755 "$selftest_dyn" "$root/opt/selftest-dyn/soft-dirty" ||
		qdie "cannot copy $preload or $selftest_dyn"
	copy_libs "$preload"
	copy_libs "$selftest_dyn"
fi

cat >"$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null ||
	{ mkdir -p /dev/hugepages && mount -t hugetlbfs hugetlbfs /dev/hugepages 2>/dev/null; }
echo madvise >/sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
echo 16 >/proc/sys/vm/nr_hugepages 2>/dev/null
ulimit -c 0
. /etc/test-env
timeout=90
for w in $(cat /proc/cmdline); do
	case $w in
	softdirty.timeout=*) timeout=${w#*=} ;;
	softdirty.expect=*) export SOFTDIRTY_EXPECT=${w#*=} ;;
	softdirty.kernel=*) export SOFTDIRTY_KERNEL=${w#*=} ;;
	esac
done
cd /tmp
echo "@@SOFTDIRTY-QEMU-START@@ kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"
while read -r t; do
	echo "@@TEST-BEGIN@@ $t uptime=$(cut -d' ' -f1 /proc/uptime)"
	timeout -s KILL "$timeout" "/tests/$t" </dev/null
	rc=$?
	echo "@@TEST-END@@ $t rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
done </tests/.list
echo "@@KERNEL-MESSAGES@@"
dmesg -r 2>/dev/null | grep -E '^<[0-4]>' | tail -n 50
echo "@@SOFTDIRTY-QEMU-END@@ uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
# If poweroff fails, init exits: panic=-1 + -no-reboot stops qemu.
INIT
chmod 755 "$root/init"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$initrd.tmp" ||
	qdie "cannot build the initramfs"
mv "$initrd.tmp" "$initrd"
qlog "initramfs: $initrd ($(du -k "$initrd" | cut -f1) KiB, $ntests tests)"
qlog "test environment in the VM: $(sed 's/^export //' "$root/etc/test-env" | tr '\n' ' ')"

# ---------------------------------------------------------------- boot + parse
# parse_log LOG: prints per-test summary lines and a final
# "TOTAL passed failed skipped" line.
parse_log() {
	tr -d '\r' <"$1" | awk -v verbose="$VERBOSE" '
	function flush_out(name,   i) {
		for (i = 1; i <= nout; i++) print "      | " out[i]
	}
	function add(msg) { why = why (why != "" ? "; " : "") msg }
	function finish(name, rc,   n) {
		why = ""; n = pass + fail + skip
		if (planskip && n == 0) skip++
		else if (rc == 143 || rc == 137 || rc == 124) { fail++; add("timed out in the VM or killed (rc=" rc ")") }
		else if (n == 0) {
			if (rc == 0) pass++
			else if (rc == 77) skip++
			else { fail++; add("exit status " rc ", no TAP result") }
		} else if (plan > 0 && n < plan) { fail++; add("plan 1.." plan " but only " n " results, exit status " rc) }
		else if (rc != 0 && rc != 77 && tapfail == 0) { fail++; add("exit status " rc " without a reported failure") }
		if (bail != "") { if (tapfail == 0 && why == "") fail++; add("Bail out!" bail) }
		printf "    %-40s %3d passed, %3d failed, %3d skipped %6.1fs%s\n", name, pass, fail, skip, dur, (why != "" ? "  -- " why : "")
		if (fail > 0 || verbose == 1) flush_out(name)
		P += pass; F += fail; S += skip
	}
	/@@SOFTDIRTY-QEMU-START@@/ { started = 1; next }
	/@@TEST-BEGIN@@/ {
		cur = $2; t0 = $3; sub(/^uptime=/, "", t0); intest = 1; pass = fail = skip = tapfail = plan = planskip = 0; nout = 0; bail = ""
		next
	}
	/@@TEST-END@@/ {
		rc = $3; sub(/^rc=/, "", rc)
		t1 = $4; sub(/^uptime=/, "", t1); dur = t1 - t0
		finish(cur, rc + 0); intest = 0; next
	}
	/@@KERNEL-MESSAGES@@/ { inkmsg = 1; next }
	/@@SOFTDIRTY-QEMU-END@@/ { ended = 1; inkmsg = 0; next }
	inkmsg { if ($0 != "") kmsg[++nk] = $0; next }
	/Kernel panic|BUG: |Oops|WARNING: CPU|general protection fault/ { kbad[++nb] = $0 }
	intest {
		out[++nout] = $0
		if ($0 ~ /^1\.\.[0-9]+/) {
			plan = substr($0, 4) + 0
			if (plan == 0 && $0 ~ /# *[Ss][Kk][Ii][Pp]/) planskip = 1
		} else if ($0 ~ /^not ok( |$)/) {
			if ($0 ~ /# *(TODO|todo)/) skip++
			else if ($0 ~ /# *[Ss][Kk][Ii][Pp]/) skip++
			else { fail++; tapfail++ }
		} else if ($0 ~ /^ok( |$)/) {
			if ($0 ~ /# *[Ss][Kk][Ii][Pp]/) skip++
			else pass++
		} else if ($0 ~ /^Bail out!/) {
			bail = substr($0, 10)
		}
	}
	END {
		if (intest) {
			fail++; P += pass; F += fail; S += skip
			printf "    %-40s %3d passed, %3d failed, %3d skipped  -- did not finish (VM hung, crashed or timed out)\n", cur, pass, fail, skip
			flush_out(cur)
		}
		if (!started) {
			F++; print "    BOOT FAILURE: no start marker on the console"
		} else if (!ended && !intest) {
			F++; print "    no end marker: the VM hung or died after the tests"
		}
		if (nb > 0) {
			F++; print "    kernel reported problems on the console:"
			for (i = 1; i <= nb && i <= 20; i++) print "      ! " kbad[i]
		}
		kerr = 0
		for (i = 1; i <= nk; i++)
			if (kmsg[i] ~ /BUG|WARNING|Oops|panic|general protection|Call Trace/) { F++; kerr = 1; print "    kernel log has errors:"; break }
		if (nk > 0 && (verbose == 1 || kerr)) for (i = 1; i <= nk; i++) print "      dmesg " kmsg[i]
		print "TOTAL", P + 0, F + 0, S + 0
	}'
}

total_p=0 total_f=0 total_s=0
summary=()
for series in "${kernels[@]}"; do
	t_kernel=$(date +%s.%N)
	echo "=== Linux $series (cloud-amd64) ==="
	var=SOFTDIRTY_EXPECT_${series//./_}
	expect=${!var}
	kdir="" kname="" kver=""
	if ! fetch_kernel "$series"; then
		echo "    FAIL: could not get a $series cloud-amd64 kernel"
		total_f=$((total_f + 1))
		summary+=("Linux $series: kernel not available: 0 passed, 1 failed, 0 skipped")
		continue
	fi
	vmlinuz=$(find "$kdir/boot" -maxdepth 1 -name 'vmlinuz-*' | head -1)
	config=$(find "$kdir/boot" -maxdepth 1 -name 'config-*' | head -1)
	if [ -z "$vmlinuz" ] || [ -z "$config" ]; then
		echo "    FAIL: no vmlinuz/config in $kname"
		total_f=$((total_f + 1))
		summary+=("Linux $series ($kname): broken package: 0 passed, 1 failed, 0 skipped")
		continue
	fi
	if ! check_config "$config"; then
		echo "    FAIL: $kname cannot boot a plain initramfs (see above)"
		total_f=$((total_f + 1))
		summary+=("Linux $series ($kname): unusable config: 0 passed, 1 failed, 0 skipped")
		continue
	fi

	log=$build_dir/console-$series.log
	errlog=$build_dir/qemu-$series.stderr
	: >"$log"
	append="console=ttyS0 panic=-1 quiet loglevel=4 softdirty.expect=$expect"
	append+=" softdirty.timeout=$TEST_TIMEOUT softdirty.kernel=$series"
	append+=" transparent_hugepage=madvise ${QEMU_EXTRA_APPEND:-}"
	qlog "$series: booting $(basename "$vmlinuz") with -accel $accel (expect $expect, timeout ${QEMU_TIMEOUT}s)"
	t_boot=$(date +%s.%N)
	qemu-system-x86_64 -nodefaults -no-user-config -display none -no-reboot \
		-machine pc -accel "$accel" -cpu "$cpu" -smp "$QEMU_SMP" -m "$QEMU_MEM" \
		-kernel "$vmlinuz" -initrd "$initrd" -append "$append" \
		-serial "file:$log" -monitor none </dev/null >"$errlog" 2>&1 &
	qpid=$!
	boot_time="" timed_out=0 guest_boot=""
	while kill -0 "$qpid" 2>/dev/null; do
		if [ -z "$boot_time" ] && grep -q '@@SOFTDIRTY-QEMU-START@@' "$log" 2>/dev/null; then
			boot_time=$(elapsed "$t_boot")
		fi
		if awk -v a="$t_boot" -v b="$(date +%s.%N)" -v t="$QEMU_TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then
			timed_out=1
			qlog "$series: wall-clock timeout (${QEMU_TIMEOUT}s): killing qemu pid $qpid"
			kill "$qpid" 2>/dev/null
			sleep 2
			kill -9 "$qpid" 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait "$qpid" 2>/dev/null
	qrc=$?
	run_time=$(elapsed "$t_boot")
	if [ -z "$boot_time" ] && grep -q '@@SOFTDIRTY-QEMU-START@@' "$log"; then
		boot_time="<$run_time"
	fi
	guest_boot=$(tr -d '\r' <"$log" | sed -n 's/.*@@SOFTDIRTY-QEMU-START@@.*uptime=\([0-9.]*\).*/\1/p' | head -1)

	results=$(parse_log "$log")
	read -r _ p f s <<<"$(tail -1 <<<"$results")"
	echo "    kernel $kname $kver, CONFIG_MEM_SOFT_DIRTY: $(grep -E '^(# )?CONFIG_MEM_SOFT_DIRTY[= ]' "$config")"
	sed '$d' <<<"$results"
	if [ "$timed_out" = 1 ]; then
		echo "    FAIL: qemu killed after ${QEMU_TIMEOUT}s wall clock"
		f=$((f + 1))
	elif [ "$qrc" -ne 0 ]; then
		echo "    FAIL: qemu exited with status $qrc"
		f=$((f + 1))
	fi
	if [ "$f" -gt 0 ] && [ -s "$errlog" ]; then
		sed 's/^/    qemu: /' "$errlog" | tail -20
	fi
	if ! grep -q '@@SOFTDIRTY-QEMU-START@@' "$log"; then
		echo "    last console lines:"
		tr -d '\r' <"$log" | tail -30 | sed 's/^/      > /'
	fi
	if [ -n "$boot_time" ]; then
		boot_msg="${boot_time}s to first test (guest uptime ${guest_boot:-?}s)"
	else
		boot_msg="did not boot"
	fi
	echo "    boot: $boot_msg, qemu run ${run_time}s, total for this kernel $(elapsed "$t_kernel")s; console log: $log"
	echo "    Linux $series: $p passed, $f failed, $s skipped"
	summary+=("Linux $series ($kname $kver): $p passed, $f failed, $s skipped (boot ${boot_time:-n/a}${boot_time:+s}, run ${run_time}s)")
	total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
done

echo "=== summary (total $(elapsed "$t_script")s) ==="
for l in "${summary[@]}"; do echo "  $l"; done
echo "$total_p passed, $total_f failed, $total_s skipped"
[ "$total_f" -eq 0 ]
