#!/bin/sh
# Installs rcrun and rcri as a node's runtime: release binaries, the systemd unit, the default rcri
# config and the default CNI config. Idempotent: binaries and the unit are replaced when they
# differ, the configs are never overwritten (an existing /etc/rcri/config.toml or CNI config
# stays as the admin left it). Prints what it did.
#
#   hack/install.sh [--prefix /usr/local] [--destdir DIR] [--no-build] [--unit-dir DIR]
#
#   --prefix   where bin/ and share/doc/ go (default /usr/local); the unit's ExecStart follows it
#   --destdir  staging root prepended to every installed path (packaging, tests); the unit and
#              the config still name the final paths
#   --no-build install what target/release already holds
#   --unit-dir where the unit goes (default /etc/systemd/system, as an admin's local unit;
#              a package would pass /lib/systemd/system)
#
# Afterwards (not done here): `systemctl daemon-reload && systemctl enable --now rcri`, and CNI
# plugins in /opt/cni/bin or /usr/lib/cni (Debian: apt-get install containernetworking-plugins).
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
destdir=
build=1
unit_dir=/etc/systemd/system

die() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a value"; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    --unit-dir) [ $# -ge 2 ] || die "--unit-dir needs a value"; unit_dir=$2; shift 2 ;;
    --unit-dir=*) unit_dir=${1#*=}; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case "$prefix" in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
case "$unit_dir" in /*) ;; *) die "--unit-dir must be absolute: $unit_dir" ;; esac
[ -z "$destdir" ] || destdir=$(mkdir -p "$destdir" && cd "$destdir" && pwd)
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/

if [ "$build" = 1 ]; then
    echo "building: hack/build-release.sh (rcrun and rcri-monitor static)"
    "$repo/hack/build-release.sh"
fi
release=$repo/target/release
for b in rcrun rcri rcrictl; do
    [ -x "$release/$b" ] || die "$release/$b is missing (run without --no-build)"
done

# install_file SRC DEST MODE: replaces DEST when its content or mode differs (atomically).
install_file() {
    src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest" &&
        [ "$(stat -c %a "$dest")" = "$mode" ]; then
        echo "unchanged  $dest"
        return
    fi
    verb=installed
    [ -e "$dest" ] && verb=updated
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest.install-tmp"
    mv -f "$dest.install-tmp" "$dest"
    echo "$verb  $dest"
}

# install_config SRC DEST: never overwrites an existing config.
install_config() {
    src=$1 dest=$2
    if [ -e "$dest" ]; then
        if cmp -s "$src" "$dest"; then
            echo "unchanged  $dest"
        else
            echo "kept       $dest (exists and differs from $src; not overwritten)"
        fi
        return
    fi
    mkdir -p "$(dirname "$dest")"
    install -m 0644 "$src" "$dest"
    echo "installed  $dest"
}

bindir=${prefix%/}/bin
for b in rcrun rcri rcrictl; do
    install_file "$release/$b" "$destdir$bindir/$b" 755
done
# The small per-container monitor, when the workspace builds it: rcri runs it from beside its
# own binary, else falls back to `rcri monitor`.
if [ -x "$release/rcri-monitor" ] && grep -q 'name = "rcri-monitor"' "$repo/cri-shim/Cargo.toml"; then
    install_file "$release/rcri-monitor" "$destdir$bindir/rcri-monitor" 755
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e "s|/usr/local/bin/|$bindir/|g" -e "s|/usr/local/share/|${prefix%/}/share/|g" \
    "$repo/contrib/systemd/rcri.service" >"$tmp/rcri.service"
install_file "$tmp/rcri.service" "$destdir$unit_dir/rcri.service" 644
install_file "$repo/README.md" "$destdir${prefix%/}/share/doc/rcri/README.md" 644

install_config "$repo/contrib/rcri/config.toml" "$destdir/etc/rcri/config.toml"

# The CNI config: rcri uses the lexically first file of /etc/cni/net.d, so an existing network
# (flannel, calico, ... or containerd's) stays in charge; ours is only added beside it.
cni_dir=$destdir/etc/cni/net.d
existing='' first=''
for f in "$cni_dir"/*.conflist "$cni_dir"/*.conf "$cni_dir"/*.json; do
    [ -e "$f" ] || continue
    name=${f##*/}
    [ "$name" = 10-rcri.conflist ] || existing="$existing $name"
done
install_config "$repo/contrib/cni/10-rcri.conflist" "$cni_dir/10-rcri.conflist"
if [ -n "$existing" ]; then
    for f in "$cni_dir"/*; do
        case "$f" in *.conflist|*.conf|*.json) first=${f##*/}; break ;; esac
    done
    echo "note       $cni_dir also holds:$existing; rcri uses the lexically first: $first"
fi

found=
for d in /opt/cni/bin /usr/lib/cni; do
    [ -x "$destdir$d/bridge" ] || [ -x "$d/bridge" ] && found=$d && break
done
[ -n "$found" ] || echo "note       no CNI plugins in /opt/cni/bin or /usr/lib/cni (Debian: apt-get install containernetworking-plugins)"

if [ -z "$destdir" ]; then
    echo "next: systemctl daemon-reload && systemctl enable --now rcri"
else
    echo "staged under $destdir"
fi
