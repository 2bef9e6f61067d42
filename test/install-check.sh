#!/bin/sh
# make install into a scratch DESTDIR, then build the README's example
# against the installed header, pkg-config file and library, statically
# and dynamically, and run both.
set -eu
dest=$(realpath -m "${1:?usage: install-check.sh DIR}")
rm -rf "$dest"
make -s BUILDDIR="$dest/build" PREFIX=/usr DESTDIR="$dest/root" install
root=$dest/root
for f in usr/include/softdirty.h usr/lib/libsoftdirty.a usr/lib/libsoftdirty.so.0 \
	 usr/lib/pkgconfig/softdirty.pc usr/bin/softdirty usr/share/man/man3/softdirty.3 \
	 usr/share/man/man1/softdirty.1; do
	[ -e "$root/$f" ] || { echo "missing after install: $f"; exit 1; }
done
# exported symbols: exactly the public API, versioned
nm -D --defined-only "$root/usr/lib/libsoftdirty.so.0" | awk '{print $3}' | sed 's/@.*//' |
	grep -v '^SOFTDIRTY_' | sort > "$dest/syms"
grep -o 'softdirty_[a-z_]*' src/libsoftdirty.map | sort > "$dest/want"
diff -u "$dest/want" "$dest/syms"
objdump -p "$root/usr/lib/libsoftdirty.so.0" | grep -q 'SONAME *libsoftdirty.so.0'
export PKG_CONFIG_SYSROOT_DIR="$root" PKG_CONFIG_PATH="$root/usr/lib/pkgconfig"
cflags=$(pkg-config --cflags softdirty)
cc -std=c11 -Wall -Werror $cflags -o "$dest/basic-dyn" examples/basic.c \
	$(pkg-config --libs softdirty)
LD_LIBRARY_PATH="$root/usr/lib" "$dest/basic-dyn"
cc -std=c11 -Wall -Werror $cflags -o "$dest/basic-static" examples/basic.c \
	"$root/usr/lib/libsoftdirty.a" $(pkg-config --libs-only-other --static softdirty) \
	-lxxhash
"$dest/basic-static"
"$root/usr/bin/softdirty" probe >/dev/null
