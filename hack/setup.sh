#!/usr/bin/env bash
# Installs what building and testing rcrun needs on a Debian (bookworm) machine, as root.
# Idempotent: installs only what is missing, and runs `apt-get update` only then.
set -euo pipefail

die() { echo "setup: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (tests create namespaces, mounts and cgroups)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"

# containernetworking-plugins: rcri's CNI plugins (bridge, host-local, loopback, portmap) in
# /usr/lib/cni; iptables: what portmap programs; protobuf-compiler: protoc for the k8s-cri
# bindings rcri builds; docker-registry, apache2-utils (htpasswd), zstd, skopeo: the local registry the
# image-pull tests run and push hack/mkimage.sh's test images to; containerd (with ctr and
# containerd-shim-runc-v2) and podman (with conmon): the callers of rcrun that
# tests/tests/containerd.rs and tests/tests/podman.rs run it under; g++: libfuzzer-sys builds
# libFuzzer (C++) for hack/fuzz.sh; libc6-dev's libc.a and libseccomp-dev's libseccomp.a:
# hack/build-release.sh links rcrun and rcri-monitor statically.
packages=(libseccomp-dev libc6-dev pkg-config busybox-static jq iproute2 util-linux gcc g++
    containernetworking-plugins iptables protobuf-compiler
    docker-registry apache2-utils zstd skopeo
    containerd podman conmon)

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

# The cgroup v2 VM of hack/vmtest.sh: QEMU from <release>-backports (on bookworm the suite's own
# qemu-system-x86 conflicts with the backports qemu-utils that machines may already have), and
# xz-utils to unpack the guest kernel (dpkg-deb, busybox and flock are there already).
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ -n "$codename" ] || die "no VERSION_CODENAME in /etc/os-release"
backports=$codename-backports
vm_update=0
if ! grep -qsE "^[^#]*[[:space:]]$backports([[:space:]]|\$)" \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
    echo "setup: adding $backports to apt's sources"
    cat >"/etc/apt/sources.list.d/$backports.sources" <<SOURCES || die "cannot write /etc/apt/sources.list.d/$backports.sources"
Types: deb
URIs: http://deb.debian.org/debian
Suites: $backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    vm_update=1
fi
vm_missing=()
for p in qemu-system-x86 xz-utils; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || vm_missing+=("$p")
done
if [ "${#vm_missing[@]}" -gt 0 ] || [ "$vm_update" = 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
fi
if [ "${#vm_missing[@]}" -gt 0 ]; then
    echo "setup: installing ${vm_missing[*]} (from $backports where it has them)"
    apt-get install -y -qq --no-install-recommends -t "$backports" "${vm_missing[@]}" >/dev/null \
        || die "apt-get install -t $backports ${vm_missing[*]} failed"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing although qemu-system-x86 is installed"

[ -x /bin/busybox ] || die "/bin/busybox missing although busybox-static is installed"

export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null \
    || die "cargo not found (looked in PATH and \$HOME/.cargo/bin): install a Rust toolchain with rustup"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"
