# softdirty: plain Makefile.  `make` builds the library, the tool and the
# tests into $(BUILDDIR); `make check` is the whole suite (see README).
VERSION    := 0.1.0
SOVERSION  := 0
PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
BUILDDIR   ?= build
CC         ?= gcc

B := $(BUILDDIR)

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	    -Wno-unused-parameter
CFLAGS   ?= -O2 -g
ifeq ($(WERROR),1)
WARN     += -Werror
endif
ifeq ($(SAN),1)
CFLAGS   += -fsanitize=address,undefined -fno-omit-frame-pointer \
	    -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
endif
LIBS       := -lxxhash -pthread
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) -Iinclude -pthread
LIB_CFLAGS := $(ALL_CFLAGS) -fPIC -fvisibility=hidden -Isrc

LIB_SRCS := $(wildcard src/*.c)
LIB_OBJS := $(LIB_SRCS:src/%.c=$(B)/obj/%.o)
LIB_HDRS := $(wildcard src/*.h) include/softdirty.h
SONAME   := libsoftdirty.so.$(SOVERSION)
SHLIB    := $(B)/libsoftdirty.so.$(VERSION)
STLIB    := $(B)/libsoftdirty.a
# libsoftdirty-preload.so (preload/README.md): its own copy of the library
# objects, never sanitized (an ASan runtime cannot be preloaded into other
# programs) and never static.
PRELOAD        := $(B)/libsoftdirty-preload.so
PRELOAD_CFLAGS := $(filter-out -fsanitize=% -fno-sanitize-recover=%,$(LIB_CFLAGS))
PRELOAD_OBJS   := $(LIB_SRCS:src/%.c=$(B)/preload-obj/%.o)

TOOL_SRCS := $(wildcard tools/*.c) preload/run.c
# shared helpers, linked into the test programs (not tests themselves)
TEST_SRCS := $(filter-out test/common.c test/image-common.c,$(wildcard test/*.c))
TEST_BINS := $(TEST_SRCS:test/%.c=$(B)/test/%)
TEST_COMMON := $(wildcard test/common.c)
BENCH_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(B)/bench/%)
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(EXAMPLE_SRCS:examples/%.c=$(B)/examples/%)

.PHONY: all lib tests bench-build examples check check-host check-kernels \
	static-tests test-run bench demo install uninstall clean deps fuzz

all: lib $(B)/softdirty tests examples

lib: $(SHLIB) $(STLIB) $(PRELOAD)

$(B)/obj/%.o: src/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c -o $@ $<

$(SHLIB): $(LIB_OBJS) src/libsoftdirty.map
	$(CC) -shared -Wl,-soname,$(SONAME) \
		-Wl,--version-script=src/libsoftdirty.map $(LDFLAGS) \
		-o $@ $(LIB_OBJS) $(LIBS)
	ln -sf libsoftdirty.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $(B)/libsoftdirty.so

$(STLIB): $(LIB_OBJS)
	rm -f $@
	ar rcs $@ $^

$(B)/preload-obj/%.o: src/%.c $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(PRELOAD_CFLAGS) -c -o $@ $<

$(PRELOAD): preload/softdirty-preload.c preload/libsoftdirty-preload.map \
		$(PRELOAD_OBJS) $(LIB_HDRS)
	$(CC) $(PRELOAD_CFLAGS) -shared \
		-Wl,--version-script=preload/libsoftdirty-preload.map -Wl,-z,defs \
		-o $@ preload/softdirty-preload.c $(PRELOAD_OBJS) $(LIBS) -ldl

$(B)/softdirty: $(TOOL_SRCS) $(wildcard tools/*.h) preload/run.h $(STLIB)
	$(CC) $(ALL_CFLAGS) -Itools -Ipreload \
		-DSOFTDIRTY_PRELOAD_PATH='"$(LIBDIR)/libsoftdirty-preload.so"' \
		$(LDFLAGS) -o $@ $(TOOL_SRCS) $(STLIB) $(LIBS)

tests: $(TEST_BINS) $(B)/test/preload-selftest

# Shell tests: installed as executables next to the C ones.
$(B)/test/preload-selftest: test/preload-selftest.sh
	@mkdir -p $(@D)
	install -m 755 $< $@

$(B)/test/%: test/%.c $(TEST_COMMON) $(wildcard test/*.h) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Isrc -Itest $(LDFLAGS) -o $@ $< $(TEST_COMMON) \
		$(STLIB) $(LIBS)

# Tests of dump/image/restore call the commands in-process (fork + cmd_*)
# and read images with the tool's own reader.
IMG_TOOL_SRCS := tools/image-fmt.c tools/proc-mem.c tools/dump.c tools/image.c
$(B)/test/image-%: test/image-%.c $(TEST_COMMON) test/image-common.c \
		$(wildcard test/*.h) $(IMG_TOOL_SRCS) $(wildcard tools/*.h) \
		$(STLIB) $(B)/gen/fuzz-corpus.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Isrc -Itest -Itools -I$(B)/gen $(LDFLAGS) -o $@ $< \
		$(TEST_COMMON) test/image-common.c $(IMG_TOOL_SRCS) $(STLIB) \
		$(LIBS)

# the fuzz corpus as arrays, for image-badinput
$(B)/gen/fuzz-corpus.h: test/fuzz/embed.sh $(wildcard test/fuzz/corpus/*)
	@mkdir -p $(@D)
	sh test/fuzz/embed.sh test/fuzz/corpus > $@

examples: $(EXAMPLE_BINS)

$(B)/examples/%: examples/%.c $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(STLIB) $(LIBS)

bench-build: $(BENCH_BINS)

$(B)/bench/image-%: bench/image-%.c $(IMG_TOOL_SRCS) $(wildcard tools/*.h) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Isrc -Ibench -Itools $(LDFLAGS) -o $@ $< \
		$(IMG_TOOL_SRCS) $(STLIB) $(LIBS) -lm

$(B)/bench/%: bench/%.c $(wildcard bench/*.h) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Isrc -Ibench $(LDFLAGS) -o $@ $< $(STLIB) $(LIBS) -lm

# Static test binaries for the qemu kernels (busybox initramfs, no libc).
static-tests:
	$(MAKE) BUILDDIR=$(BUILDDIR)/static LDFLAGS=-static SAN= tests \
		$(BUILDDIR)/static/softdirty

# Run the tests of this build (one program per test, TAP, per-test timeout).
test-run: all
	sh test/runner.sh $(B)/test

# The image reader under libFuzzer (test/fuzz/README.md): checksums are
# not enforced in this build so that mutations reach the parser.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -DIMG_FUZZING=1 -g -O1 \
	-fsanitize=fuzzer,address,undefined -Itools
FUZZ_TIME ?= 600

$(B)/fuzz/image-fuzz: test/fuzz/image-fuzz.c tools/image-fmt.c tools/image-fmt.h
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $@ test/fuzz/image-fuzz.c tools/image-fmt.c -lxxhash

$(B)/fuzz/mkseed: test/fuzz/mkseed.c tools/image-fmt.c tools/image-fmt.h
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itools -o $@ test/fuzz/mkseed.c tools/image-fmt.c -lxxhash

fuzz: $(B)/fuzz/image-fuzz $(B)/fuzz/mkseed
	sh test/fuzz/run.sh $(B)/fuzz $(FUZZ_TIME)

deps:
	sh scripts/deps.sh

# The whole suite: gcc, clang, ASan+UBSan on the host, then real kernels.
check: deps
	bash test/check-all.sh

check-host: deps
	bash test/check-all.sh --host-only

demo: deps all
	sh scripts/demo.sh $(B)

bench: deps bench-build
	sh bench/run.sh $(B)/bench

install: lib $(B)/softdirty
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR) \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 644 include/softdirty.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libsoftdirty.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libsoftdirty.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(PRELOAD) $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
		softdirty.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/softdirty.pc
	install -m 755 $(B)/softdirty $(DESTDIR)$(BINDIR)/
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(wildcard man/*.3) $(DESTDIR)$(MANDIR)/man3/

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libsoftdirty.* \
		$(DESTDIR)$(LIBDIR)/libsoftdirty-preload.so \
		$(DESTDIR)$(LIBDIR)/pkgconfig/softdirty.pc \
		$(DESTDIR)$(INCLUDEDIR)/softdirty.h $(DESTDIR)$(BINDIR)/softdirty

clean:
	rm -rf $(BUILDDIR)

-include test/qemu/rules.mk
