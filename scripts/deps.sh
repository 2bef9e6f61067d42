#!/bin/sh
# Install what building and testing softdirty needs on Debian 12, as root.
# Idempotent: does nothing (and needs no network) when all is present.
set -e
PKGS="gcc make clang libclang-rt-14-dev libc6-dev libxxhash-dev pkg-config binutils man-db groff-base \
	qemu-system-x86 busybox-static cpio xz-utils linux-source-6.1"
missing=""
for p in $PKGS; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends $missing
