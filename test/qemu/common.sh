# shellcheck shell=bash
# Helpers shared by test/qemu/*.sh (sourced, not executed).

qlog() { printf '%s\n' "qemu-tests: $*" >&2; }
qdie() { qlog "error: $*"; exit 2; }

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ensure_packages PKG...: install whatever is missing (CI: root, no stdin).
ensure_packages() {
	local missing=() p
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	qlog "installing missing packages: ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			SUDO="sudo -n"
		else
			qdie "not root and no sudo: please install ${missing[*]}"
		fi
	fi
	${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
		qdie "apt-get update failed"
	${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${missing[@]}" </dev/null >&2 ||
		qdie "apt-get install ${missing[*]} failed"
}
