#!/bin/sh
# Builds the release binaries the way they are shipped and measured: rcrun and rcri-monitor as
# static executables (glibc static-pie, libseccomp.a), rcri and rcrictl as usual.
#
#   hack/build-release.sh [--quiet] [--symbols] [--order FILE] [-p rcrun] [-p rcri]
#                                                            (default: both packages)
#
# Why static: these two are the per-container processes. Without ld.so, libc.so and
# libseccomp.so to map, relocate and bind, the monitor's RSS drops from 2.1 MB to 1.2 MB and
# `rcrun run` from 4.7 MB to 4.0 MB peak and ~2 ms faster (measured on this project's machine).
# rcri and rcrictl stay dynamic: they resolve registry host names, which static glibc cannot do
# through NSS.
#
# rcrun's final link also (with rustc's lld, named explicitly so that another default linker
# cannot drop the options):
# - places the functions listed in runtime/symbol-order.txt (or --order FILE) first, together:
#   the kernel maps a binary's pages 64 KiB around each page a process touches, so hot code
#   spread over the whole 2.9 MB .text made nearly all of it resident. The list is what rcrun
#   executes on its hot paths, made by hack/symbol-order.sh; names it lacks (code changed
#   since) are only placed as usual.
# - packs relative relocations (DT_RELR, glibc >= 2.36): a static-pie relocates itself at every
#   start, and 256 KiB of RELA entries become 3 KiB (rcri-monitor's link takes this too).
# --symbols keeps the symbol table (hack/symbol-order.sh maps addresses back to functions).
#
# Only the final link of each binary takes these flags (`cargo rustc -- ...`): putting them in
# RUSTFLAGS would also apply them to proc-macro crates, which cannot be static. A later plain
# `cargo build --release` links them dynamically again (correct, only bigger and slower).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
quiet=
pkgs=
strip=
order=$repo/runtime/symbol-order.txt
die() { echo "build-release.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
    --quiet | -q) quiet=--quiet; shift ;;
    -p) [ $# -ge 2 ] || die "-p needs a package"; pkgs="$pkgs $2"; shift 2 ;;
    --symbols) strip="-C strip=none"; shift ;;
    --order) [ $# -ge 2 ] || die "--order needs a file"; order=$(realpath "$2"); shift 2 ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$pkgs" ] || pkgs="rcrun rcri"

# libseccomp-sys links libseccomp statically when told so, from the multiarch library dir.
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
for dir in "/usr/lib/$multiarch" /usr/lib64 /usr/lib; do
    if [ -f "$dir/libseccomp.a" ]; then
        LIBSECCOMP_LIB_PATH=$dir
        break
    fi
done
[ -n "${LIBSECCOMP_LIB_PATH:-}" ] || die "libseccomp.a not found: run hack/setup.sh (package libseccomp-dev)"
[ -n "$multiarch" ] && [ -f "/usr/lib/$multiarch/libc.a" ] || [ -f /usr/lib/libc.a ] \
    || die "glibc's libc.a not found: run hack/setup.sh (package libc6-dev)"
export LIBSECCOMP_LIB_PATH LIBSECCOMP_LINK_TYPE=static
[ -f "$order" ] || die "symbol order file $order not found"
# rustc's own lld, through the compiler driver as rustc links by default (gcc-ld/ld.lld).
host=$(rustc -vV | sed -n 's/^host: //p')
gcc_ld=$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld
[ -x "$gcc_ld/ld.lld" ] || die "rustc's lld not found at $gcc_ld/ld.lld (a rustup toolchain ships it)"

cd "$repo"
# cargo relinks when the arguments change, not when a file they name does: the list goes in
# under a name made of its content.
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
linked_order=$(realpath "$target")/symbol-order-$(sha256sum "$order" | cut -c1-16).txt
cp "$order" "$linked_order"
for pkg in $pkgs; do
    case $pkg in
    rcrun)
        # No plain `cargo build` of the static binaries first: its link would replace theirs
        # and each run would relink both ways; `cargo rustc` builds the dependencies itself.
        # shellcheck disable=SC2086 # $strip is one or no argument pair
        cargo rustc $quiet --release -p rcrun --bin rcrun -- -C target-feature=+crt-static $strip \
            -C link-arg=-fuse-ld=lld -C "link-arg=-B$gcc_ld" \
            -C "link-arg=-Wl,--symbol-ordering-file=$linked_order" -C link-arg=-Wl,--no-warn-symbol-ordering \
            -C link-arg=-Wl,-z,pack-relative-relocs
        ;;
    rcri)
        cargo build $quiet --release -p rcri --bin rcri --bin rcrictl
        cargo rustc $quiet --release -p rcri --bin rcri-monitor -- -C target-feature=+crt-static \
            -C link-arg=-fuse-ld=lld -C "link-arg=-B$gcc_ld" -C link-arg=-Wl,-z,pack-relative-relocs
        ;;
    *) die "unknown package $pkg (rcrun or rcri)" ;;
    esac
done
# ldd says so for a static-pie executable.
is_static() { ldd "$1" 2>&1 | grep -q -e 'statically linked' -e 'not a dynamic executable'; }
for pkg in $pkgs; do
    case $pkg in rcrun) bin=rcrun ;; rcri) bin=rcri-monitor ;; esac
    is_static "$target/release/$bin" || die "$target/release/$bin did not come out static"
done
