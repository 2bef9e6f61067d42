# test/qemu/rules.mk -- included by the top-level Makefile.
#
# check-kernels: run the static test programs inside real Debian cloud-amd64
# kernels (6.1 and 6.12, both with CONFIG_MEM_SOFT_DIRTY) under qemu.
# The top-level Makefile provides BUILDDIR (?= build), PRELOAD (the .so) and
# the static-tests target, which leaves static test executables in
# $(BUILDDIR)/static/test/.
#
#   make check-kernels                      both kernels
#   make check-kernels QEMU_KERNELS=6.12        one of them
#
# Needs root (or sudo) the first time to apt-get install qemu-system-x86,
# busybox-static, cpio and linux-source-6.1; kernels are cached in
# $(BUILDDIR)/qemu/cache.

QEMU_TEST_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

# Dynamically linked programs run in the VM too (their loader and libraries
# are copied in): the shim's step-aside test, with the shim itself.
QEMU_DYNAMIC_TESTS := $(BUILDDIR)/test/preload-stepaside

.PHONY: check-kernels
check-kernels: static-tests $(QEMU_DYNAMIC_TESTS) $(PRELOAD)
	QEMU_DYNAMIC="$(QEMU_DYNAMIC_TESTS)" QEMU_PRELOAD=$(PRELOAD) \
	QEMU_TOOL=$(BUILDDIR)/static/softdirty \
	$(QEMU_TEST_DIR)/run-kernels.sh $(BUILDDIR)/qemu $(BUILDDIR)/static/test $(QEMU_KERNELS)
