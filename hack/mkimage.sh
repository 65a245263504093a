#!/usr/bin/env bash
# Builds the busybox test image: OUTDIR/rootfs (from Debian's busybox-static),
# OUTDIR/config.json (runc's default spec, running `sh` without a terminal), and OUTDIR/oci, the
# same rootfs as an OCI image layout (one gzip layer, tagged docker.io/library/busybox:latest),
# and OUTDIR/test-images, an OCI layout of the images the registry-pull tests push to a local
# registry (see "Test images" below for the list).
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
    && [ -f "$out/oci/index.json" ] && [ -f "$out/test-images/index.json" ]; then
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
# user is also in group 50000, as in critest's test-image-predefined-group: the CRI
# SupplementalGroupsPolicy tests (Merge adds it, Strict does not).
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
user:x:1000:
nogroup:x:65534:
predefined:x:50000:user
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

# ---- Test images ---------------------------------------------------------------------------
# OUTDIR/test-images: one OCI layout, one ref (org.opencontainers.image.ref.name) per image;
# io.containerd.image.name holds docker.io/rcri-test/<ref>:latest, the name the pull tests use
# through a docker.io mirror. All reuse the busybox layer above.
#   busybox            OCI manifest, one gzip layer (as OUTDIR/oci)
#   busybox-docker     the same as a Docker schema2 manifest (Docker media types)
#   entrypoint         Entrypoint ["/bin/echo","entrypoint"], Cmd ["default-arg"]
#   user               User "user" (uid 1000 in /etc/passwd), WorkingDir /home/user
#   layers             5 layers, gzip + zstd + uncompressed, whiteouts and an opaque dir:
#                      /data/{b,c,dir/z,keep-dir/k} remain; /data/a, /data/gone, /data/dir/{x,y} do not
#   multiarch          OCI index: this machine's arch (busybox) + a stub for another arch
#   multiarch-docker   the same as a Docker manifest list
#   other-arch-only    OCI index with only the stub for another arch
#   stopsignal         StopSignal SIGUSR1; its shell exits 42 on SIGUSR1 and ignores SIGTERM
command -v zstd >/dev/null || die "zstd not found: run hack/setup.sh (package zstd)"
ti=$tmp/test-images
mkdir -p "$ti/blobs/sha256"
tblob() { # FILE -> moves it to test-images/blobs/sha256/<digest>, prints "<hex> <size>"
    local hex size
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    mv "$1" "$ti/blobs/sha256/$hex"
    echo "$hex $size"
}
cp "$oci/blobs/sha256/$layer_hex" "$ti/blobs/sha256/$layer_hex"
case $arch in amd64) other_arch=arm64 ;; *) other_arch=amd64 ;; esac

# mklayer DIR gzip|zstd|none -> "<blob hex> <blob size> <diff_id hex> <OCI media type>"
mklayer() {
    local t=$tmp/mklayer.tar diff mt
    tar --sort=name --mtime=@0 --numeric-owner --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -C "$1" -cf "$t" .
    diff=$(sha256sum "$t" | cut -d' ' -f1)
    case $2 in
        gzip) gzip -n -6 <"$t" >"$t.c"; mt=application/vnd.oci.image.layer.v1.tar+gzip ;;
        zstd) zstd -q -3 --no-progress -c "$t" >"$t.c"; mt=application/vnd.oci.image.layer.v1.tar+zstd ;;
        none) cp "$t" "$t.c"; mt=application/vnd.oci.image.layer.v1.tar ;;
        *) die "mklayer: unknown compression $2" ;;
    esac
    rm -f "$t"
    read -r bh bs < <(tblob "$t.c")
    echo "$bh $bs $diff $mt"
}

# mkconfig ARCH RUNCONFIG_JSON DIFF_HEX... -> "<hex> <size>"
mkconfig() {
    local a=$1 rc=$2 ids="" d
    shift 2
    for d in "$@"; do ids="$ids${ids:+,}\"sha256:$d\""; done
    printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/mkimage.sh"}]}' \
        "$a" "$rc" "$ids" >"$tmp/cfg.json"
    tblob "$tmp/cfg.json"
}

# mkmanifest oci|docker CONFIG_HEX CONFIG_SIZE "MEDIATYPE HEX SIZE"... -> "<hex> <size>"
mkmanifest() {
    local kind=$1 ch=$2 cs=$3 ls="" l mt h sz mmt cmt
    shift 3
    if [ "$kind" = docker ]; then
        mmt=application/vnd.docker.distribution.manifest.v2+json
        cmt=application/vnd.docker.container.image.v1+json
    else
        mmt=application/vnd.oci.image.manifest.v1+json
        cmt=application/vnd.oci.image.config.v1+json
    fi
    for l in "$@"; do
        read -r mt h sz <<<"$l"
        if [ "$kind" = docker ]; then
            case $mt in
                *tar+gzip) mt=application/vnd.docker.image.rootfs.diff.tar.gzip ;;
                *) die "mkmanifest: Docker schema2 has no media type for $mt" ;;
            esac
        fi
        ls="$ls${ls:+,}{\"mediaType\":\"$mt\",\"digest\":\"sha256:$h\",\"size\":$sz}"
    done
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"sha256:%s","size":%s},"layers":[%s]}' \
        "$mmt" "$cmt" "$ch" "$cs" "$ls" >"$tmp/manifest.json"
    tblob "$tmp/manifest.json"
}

# mkindex oci|docker "MANIFEST_HEX MANIFEST_SIZE ARCH"... -> "<hex> <size>"
mkindex() {
    local kind=$1 ms="" m h sz a imt mmt
    shift
    if [ "$kind" = docker ]; then
        imt=application/vnd.docker.distribution.manifest.list.v2+json
        mmt=application/vnd.docker.distribution.manifest.v2+json
    else
        imt=application/vnd.oci.image.index.v1+json
        mmt=application/vnd.oci.image.manifest.v1+json
    fi
    for m in "$@"; do
        read -r h sz a <<<"$m"
        ms="$ms${ms:+,}{\"mediaType\":\"$mmt\",\"digest\":\"sha256:$h\",\"size\":$sz,\"platform\":{\"architecture\":\"$a\",\"os\":\"linux\"}}"
    done
    printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}' "$imt" "$ms" >"$tmp/index.json"
    tblob "$tmp/index.json"
}

index_entries=""
# add_ref NAME MEDIATYPE HEX SIZE
add_ref() {
    index_entries="$index_entries${index_entries:+,}{\"mediaType\":\"$2\",\"digest\":\"sha256:$3\",\"size\":$4,\"annotations\":{\"io.containerd.image.name\":\"docker.io/rcri-test/$1:latest\",\"org.opencontainers.image.ref.name\":\"$1\"}}"
}
OCI_M=application/vnd.oci.image.manifest.v1+json
DOCKER_M=application/vnd.docker.distribution.manifest.v2+json
base_layer="application/vnd.oci.image.layer.v1.tar+gzip $layer_hex $layer_size"
path_env='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

read -r c_h c_s < <(mkconfig "$arch" "{$path_env,\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}" "$diff_id")
read -r bb_h bb_s < <(mkmanifest oci "$c_h" "$c_s" "$base_layer")
add_ref busybox "$OCI_M" "$bb_h" "$bb_s"
read -r bbd_h bbd_s < <(mkmanifest docker "$c_h" "$c_s" "$base_layer")
add_ref busybox-docker "$DOCKER_M" "$bbd_h" "$bbd_s"

read -r c_h c_s < <(mkconfig "$arch" "{$path_env,\"Entrypoint\":[\"/bin/echo\",\"entrypoint\"],\"Cmd\":[\"default-arg\"],\"WorkingDir\":\"/\"}" "$diff_id")
read -r m_h m_s < <(mkmanifest oci "$c_h" "$c_s" "$base_layer")
add_ref entrypoint "$OCI_M" "$m_h" "$m_s"

read -r c_h c_s < <(mkconfig "$arch" "{$path_env,\"Cmd\":[\"id\"],\"User\":\"user\",\"WorkingDir\":\"/home/user\"}" "$diff_id")
read -r m_h m_s < <(mkmanifest oci "$c_h" "$c_s" "$base_layer")
add_ref user "$OCI_M" "$m_h" "$m_s"

# As PID 1 the shell ignores SIGTERM (no handler); only the image's stop signal ends it early.
read -r c_h c_s < <(mkconfig "$arch" "{$path_env,\"Cmd\":[\"sh\",\"-c\",\"trap 'exit 42' USR1; while :; do sleep 1 & wait \$!; done\"],\"StopSignal\":\"SIGUSR1\",\"WorkingDir\":\"/\"}" "$diff_id")
read -r m_h m_s < <(mkmanifest oci "$c_h" "$c_s" "$base_layer")
add_ref stopsignal "$OCI_M" "$m_h" "$m_s"

# The many-layer image. Layer 2 (gzip) adds files, 3 (zstd) whites some out and makes a
# directory opaque, 4 (uncompressed) adds more, 5 (gzip) removes a whole directory.
L=$tmp/layers
mkdir -p "$L/2/data/dir" "$L/2/data/gone/sub" "$L/2/data/keep-dir"
echo a >"$L/2/data/a"; echo b >"$L/2/data/b"
echo x >"$L/2/data/dir/x"; echo y >"$L/2/data/dir/y"
echo g >"$L/2/data/gone/sub/g"; echo k >"$L/2/data/keep-dir/k"
mkdir -p "$L/3/data/dir"
: >"$L/3/data/.wh.a"
: >"$L/3/data/dir/.wh..wh..opq"
echo z >"$L/3/data/dir/z"
mkdir -p "$L/4/data" "$L/4/etc"
echo c >"$L/4/data/c"; echo ok >"$L/4/etc/layers-ok"
mkdir -p "$L/5/data"
: >"$L/5/data/.wh.gone"
layer_descs=("$base_layer")
diffs=("$diff_id")
for spec in "2 gzip" "3 zstd" "4 none" "5 gzip"; do
    read -r n comp <<<"$spec"
    read -r bh bs dh mt < <(mklayer "$L/$n" "$comp")
    layer_descs+=("$mt $bh $bs")
    diffs+=("$dh")
done
read -r c_h c_s < <(mkconfig "$arch" "{$path_env,\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}" "${diffs[@]}")
read -r m_h m_s < <(mkmanifest oci "$c_h" "$c_s" "${layer_descs[@]}")
add_ref layers "$OCI_M" "$m_h" "$m_s"

# Another architecture's stub: one tiny layer; never run, only listed (or alone, to fail).
mkdir -p "$L/stub"
echo "$other_arch stub" >"$L/stub/stub"
read -r sh ss sd smt < <(mklayer "$L/stub" gzip)
read -r c_h c_s < <(mkconfig "$other_arch" '{"Cmd":["/stub"]}' "$sd")
read -r stub_h stub_s < <(mkmanifest oci "$c_h" "$c_s" "$smt $sh $ss")
read -r stubd_h stubd_s < <(mkmanifest docker "$c_h" "$c_s" "$smt $sh $ss")
read -r i_h i_s < <(mkindex oci "$bb_h $bb_s $arch" "$stub_h $stub_s $other_arch")
add_ref multiarch application/vnd.oci.image.index.v1+json "$i_h" "$i_s"
read -r i_h i_s < <(mkindex docker "$bbd_h $bbd_s $arch" "$stubd_h $stubd_s $other_arch")
add_ref multiarch-docker application/vnd.docker.distribution.manifest.list.v2+json "$i_h" "$i_s"
read -r i_h i_s < <(mkindex oci "$stub_h $stub_s $other_arch")
add_ref other-arch-only application/vnd.oci.image.index.v1+json "$i_h" "$i_s"
rm -rf "$L"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}\n' \
    "$index_entries" >"$ti/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$ti/oci-layout"

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
