#!/usr/bin/env bash
# Installs what building and testing rcrun needs on a Debian (bookworm) machine, as root.
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
set -euo pipefail

die() { echo "setup: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (tests create namespaces, mounts and cgroups)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"

packages=(libseccomp-dev pkg-config busybox-static jq iproute2 util-linux gcc)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

[ -x /bin/busybox ] || die "/bin/busybox missing although busybox-static is installed"

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null \
    || die "cargo not found (looked in PATH and \$HOME/.cargo/bin): install a Rust toolchain with rustup"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
