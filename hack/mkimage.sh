#!/usr/bin/env bash
# Builds the busybox test image: OUTDIR/rootfs (from Debian's busybox-static),
# OUTDIR/config.json (runc's default spec, running `sh` without a terminal), and OUTDIR/oci, the
# same rootfs as an OCI image layout (one gzip layer, tagged docker.io/library/busybox:latest).
# usage: hack/mkimage.sh [OUTDIR]     (default: <repo>/target/e2e-image)
# Idempotent and fast when already built; the output appears atomically (built in a temp dir,
# then renamed into place).
set -euo pipefail

die() { echo "mkimage: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/target/e2e-image}
busybox=/bin/busybox

[ -x "$busybox" ] || die "$busybox not found: run hack/setup.sh (package busybox-static)"
command -v sha256sum >/dev/null || die "sha256sum not found"

# The stamp changes with the busybox binary and with this script.
stamp_want="$(sha256sum "$busybox" | cut -d' ' -f1) $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp_want" ] \
    && [ -f "$out/config.json" ] && [ -x "$out/rootfs/bin/busybox" ] \
    && [ -f "$out/oci/index.json" ]; then
    exit 0
fi

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "$(dirname "$out")/.mkimage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
rootfs=$tmp/rootfs

mkdir -p "$rootfs"
for d in bin sbin etc proc sys dev root home/user var/tmp run usr/bin usr/sbin mnt; do
    mkdir -p "$rootfs/$d"
done
mkdir -m 1777 "$rootfs/tmp"
chmod 1777 "$rootfs/var/tmp"
chmod 700 "$rootfs/root"
chown 1000:1000 "$rootfs/home/user"

cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    case $applet in busybox | */*) continue ;; esac
    ln -sf busybox "$rootfs/bin/$applet"
done

cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
user:x:1000:
nogroup:x:65534:
GROUP
echo rcrun >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
HOSTS
echo "nameserver 127.0.0.1" >"$rootfs/etc/resolv.conf"

# runc's default spec (`runc spec`), with args ["sh"] and no terminal.
cat >"$tmp/config.json" <<'CONFIG'
{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": false,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"effective": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"permitted": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"ambient": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": [
				"nosuid",
				"strictatime",
				"mode=755",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": [
				"nosuid",
				"noexec",
				"newinstance",
				"ptmxmode=0666",
				"mode=0620",
				"gid=5"
			]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"mode=1777",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": [
				"nosuid",
				"noexec",
				"nodev"
			]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"ro"
			]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"relatime",
				"ro"
			]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{
				"type": "pid"
			},
			{
				"type": "network"
			},
			{
				"type": "ipc"
			},
			{
				"type": "uts"
			},
			{
				"type": "mount"
			}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}
CONFIG

# The OCI image layout. Reproducible: names sorted, times zeroed, numeric owners, no gzip
# timestamp, fixed `created`, so the same busybox always gives the same digests.
command -v gzip >/dev/null || die "gzip not found"
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
oci=$tmp/oci
mkdir -p "$oci/blobs/sha256"
blob() { # FILE -> moves it to blobs/sha256/<digest>, prints "<hex> <size>"
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$oci/blobs/sha256/$hex"
    echo "$hex $size"
}
tar --sort=name --mtime=@0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$rootfs" -cf "$tmp/layer.tar" .
diff_id=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
gzip -n -6 <"$tmp/layer.tar" >"$tmp/layer.tar.gz"
rm -f "$tmp/layer.tar"
read -r layer_hex layer_size < <(blob "$tmp/layer.tar.gz")
cat >"$tmp/image-config.json" <<IMAGECONFIG
{"architecture":"$arch","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/mkimage.sh"}]}
IMAGECONFIG
read -r config_hex config_size < <(blob "$tmp/image-config.json")
cat >"$tmp/manifest.json" <<MANIFEST
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_hex","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_hex","size":$layer_size}]}
MANIFEST
read -r manifest_hex manifest_size < <(blob "$tmp/manifest.json")
# Both conventions: the OCI ref name is the tag (what skopeo/umoci `oci:DIR:latest` use),
# containerd's annotation the full name (what `ctr images import` and rcri's import use).
cat >"$oci/index.json" <<INDEX
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_hex","size":$manifest_size,"annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest","org.opencontainers.image.ref.name":"latest"}}]}
INDEX
echo '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"

echo "$stamp_want" >"$tmp/.stamp"

# Swap the new image in: the old one (if any) is moved aside first, so readers see either
# the complete old image or the complete new one.
if [ -e "$out" ]; then
    old=$(mktemp -d "$(dirname "$out")/.mkimage-old.XXXXXX")
    mv "$out" "$old/image"
    mv "$tmp" "$out"
    rm -rf "$old"
else
    mv "$tmp" "$out"
fi
trap - EXIT
