#!/usr/bin/env bash
# Runs a command inside a throw-away QEMU VM whose /sys/fs/cgroup is a pure cgroup v2 hierarchy
# with every controller enabled in the root's cgroup.subtree_control: the cgroup v2 proof for
# hosts that are v1 or hybrid.
#
# usage: hack/vmtest.sh [OPTIONS] -- CMD [ARGS...]
#        hack/vmtest.sh --build          (only build/refresh the VM artefacts)
#
# The command must already be built on the host. The guest boots Debian's kernel (the
# linux-image-amd64 package of this machine's apt sources, downloaded with `apt-get download`,
# never installed) from a tiny busybox initramfs, mounts the host's / read-only over virtio-9p and
# switch_roots into it, with tmpfs on /tmp, /run, /var/tmp, /root, fresh proc, sysfs, devtmpfs,
# and cgroup2 on /sys/fs/cgroup. The command runs there as root, in the root cgroup (`0::/`),
# with the same cwd as here (or / if that does not exist in the guest, e.g. under /tmp), stdin
# from /dev/null. Its stdout and stderr are printed here as they come (stdout to stdout, stderr
# to stderr) and its exit status is this script's exit status.
#
# Options:
#   --mem M        guest memory, as for qemu -m (default 2G)
#   --cpus N       guest CPUs (default: host CPUs, at most 4)
#   --timeout S    seconds for boot + command + power-off (default 900); past it the VM is
#                  killed and the exit status is 124
#   --env NAME     forward $NAME into the guest (repeatable); --env NAME=VALUE sets it.
#                  Always forwarded: RCRUN_*, RUST_*, CARGO_*, PATH, TERM, NO_COLOR.
#   --disk SIZE    a blank scratch disk (virtio-blk, /dev/vda, e.g. for io.max) of SIZE
#                  (as for truncate -s, default 256M; 0 = none); the guest sees its path in
#                  RCRUN_VM_SCRATCH_DISK
#   --console      also print the guest's kernel console log (always printed on failure)
#   -v, --verbose  print what happens and how long it took
#   --build        build the artefacts and exit
#
# Exit status: the command's; 124 on timeout; 125 when the VM could not be built or booted, or
# the command's status was not reported (a message says why, with the console log).
#
# In the guest: RCRUN_VM=1, and /run/vmtest holds the exchange directory (read-write, on the
# host a temp dir removed afterwards).
#
# Environment: RCRUN_VM_DIR (artefacts, default <repo>/target/vm), RCRUN_VM_KERNEL (a
# linux-image-* package name to use instead of linux-image-amd64's dependency), RCRUN_VM_MODULES
# (more modules for the initramfs), RCRUN_VM_APPEND (more kernel command line), QEMU (binary,
# default qemu-system-x86_64).
#
# Artefacts under <repo>/target/vm (rebuilt only when their inputs change): the kernel .deb
# (deb/), per kernel package+version the plain ELF vmlinux extracted from its bzImage (booted
# directly through its PVH entry: no BIOS decompressor run under TCG; the bzImage is the
# fallback), the modules the initramfs needs, and the initramfs itself.
set -euo pipefail

prog=vmtest
die() {
    echo "$prog: $*" >&2
    exit 125
}
say() { if [ "$verbose" = 1 ]; then echo "$prog: $*" >&2; fi; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self=$repo/hack/vmtest.sh
vmdir=${RCRUN_VM_DIR:-$repo/target/vm}
qemu=${QEMU:-qemu-system-x86_64}
busybox=/bin/busybox

# Modules the initramfs loads (with their dependencies, found in the modules themselves), in this
# order; built-in ones are skipped. 9p + virtio for the shares, virtio_blk for the scratch disk,
# overlay for container root filesystems; more with RCRUN_VM_MODULES="loop veth ..." (each one
# costs boot time under TCG; the guest cannot load modules later: the host's / has none of its
# kernel's).
read -r -a extra_modules <<<"${RCRUN_VM_MODULES:-}"
modules=(virtio_pci virtio_blk 9pnet_virtio 9p overlay "${extra_modules[@]}")

mem=2G
cpus=$(nproc 2>/dev/null || echo 1)
[ "$cpus" -le 4 ] || cpus=4
timeout=900
disk=256M
console=0
verbose=0
build_only=0
env_names=()
env_sets=()

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$self"; }

while [ $# -gt 0 ]; do
    case $1 in
    --mem) mem=${2:?--mem needs a value}; shift 2 ;;
    --mem=*) mem=${1#*=}; shift ;;
    --cpus) cpus=${2:?--cpus needs a value}; shift 2 ;;
    --cpus=*) cpus=${1#*=}; shift ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --disk) disk=${2:?--disk needs a value}; shift 2 ;;
    --disk=*) disk=${1#*=}; shift ;;
    --env) [ $# -ge 2 ] || die "--env needs a NAME"; set -- "--env=$2" "${@:3}" ;;
    --env=*)
        e=${1#*=}
        case $e in
        *=*) env_sets+=("$e") ;;
        *) env_names+=("$e") ;;
        esac
        [[ ${e%%=*} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env: bad variable name: ${e%%=*}"
        shift
        ;;
    --console) console=1; shift ;;
    -v | --verbose) verbose=1; shift ;;
    --build) build_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
    esac
done
[[ $timeout =~ ^[0-9]+$ && $timeout -gt 0 ]] || die "--timeout: not a positive number of seconds: $timeout"
[[ $cpus =~ ^[0-9]+$ && $cpus -gt 0 ]] || die "--cpus: not a positive number: $cpus"
[ "$build_only" = 1 ] || [ $# -gt 0 ] || die "no command given (usage: hack/vmtest.sh [OPTIONS] -- CMD [ARGS...])"

t_start=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) $1" | awk '{printf "%.2f", $1 - $2}'; }

need() { command -v "$1" >/dev/null || die "$1 not found: $2 (run hack/setup.sh)"; }

# ---------------------------------------------------------------------------------------------
# Artefacts
# ---------------------------------------------------------------------------------------------

# The kernel package to boot and its version: linux-image-amd64's dependency, as apt sees it.
# Without apt metadata, the newest kernel already built.
resolve_kernel() {
    local pkg=${RCRUN_VM_KERNEL:-} ver="" key cache=$vmdir/kernel.resolved
    # apt-cache takes seconds: its answer is kept until apt's lists or settings change.
    # shellcheck disable=SC2012 # a fingerprint of the listing, not file names
    key=$(ls -l --time-style=+%s /var/lib/apt/lists/ /etc/apt/ /etc/apt/*.d/ 2>/dev/null | cksum | cut -d' ' -f1)
    key="$key ${pkg:--}"
    if [ -f "$cache" ] && [ "$(head -n1 "$cache")" = "$key" ]; then
        { read -r _; read -r pkg ver; } <"$cache"
    else
        if [ -z "$pkg" ]; then
            pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
                awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }') || true
        fi
        if [ -n "$pkg" ]; then
            ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }') || true
        fi
        if [ -n "$pkg" ] && [ -n "$ver" ]; then
            printf '%s\n%s %s\n' "$key" "$pkg" "$ver" >"$cache"
        fi
    fi
    if [ -z "$pkg" ] || [ -z "$ver" ]; then
        local newest
        # shellcheck disable=SC2012 # our own plain names
        newest=$(ls -1dt "$vmdir"/kernel/*/.done 2>/dev/null | head -n1) || true
        [ -n "$newest" ] || die "cannot find a kernel package: apt-cache knows no linux-image-amd64${pkg:+ / $pkg} (run apt-get update)"
        kdir=$(dirname "$newest")
        return
    fi
    kpkg=$pkg
    kver=$ver
    kdir=$vmdir/kernel/${pkg}_${ver}
}

# Decompresses the payload of a bzImage (boot protocol >= 2.08) into a plain ELF vmlinux.
extract_vmlinux() {
    local bz=$1 out=$2 hdr setup_sects off len magic
    u32() { od -An -t u4 -j "$1" -N 4 "$bz" | tr -d ' '; }
    hdr=$(od -An -c -j $((0x202)) -N 4 "$bz" | tr -d ' ')
    [ "$hdr" = HdrS ] || die "$bz: not a bzImage (no HdrS header)"
    setup_sects=$(od -An -t u1 -j $((0x1f1)) -N 1 "$bz" | tr -d ' ')
    [ "$setup_sects" -ne 0 ] || setup_sects=4
    off=$(((setup_sects + 1) * 512 + $(u32 $((0x248)))))
    len=$(u32 $((0x24c)))
    [ "$len" -gt 0 ] || die "$bz: no payload in the header (boot protocol < 2.08?)"
    magic=$(od -An -t x1 -j "$off" -N 6 "$bz" | tr -d ' \n')
    # All formats but gzip have the uncompressed size appended (4 bytes): drop it.
    [ "${magic:0:4}" = 1f8b ] || len=$((len - 4))
    # shellcheck disable=SC2054 # commas are dd's
    local payload=(dd "if=$bz" bs=1M iflag=skip_bytes,count_bytes "skip=$off" "count=$len" status=none)
    case $magic in
    fd377a585a00) need xz "xz-utils"; "${payload[@]}" | xz -dc >"$out" ;;
    28b52ffd*) need zstd "zstd"; "${payload[@]}" | zstd -qdc >"$out" ;;
    1f8b*) need gzip "gzip"; "${payload[@]}" | gzip -dc >"$out" ;;
    02214c18*) need lz4 "lz4"; "${payload[@]}" | lz4 -dc >"$out" ;;
    425a68*) need bzip2 "bzip2"; "${payload[@]}" | bzip2 -dc >"$out" ;;
    5d0000*) need xz "xz-utils"; "${payload[@]}" | xz --format=lzma -dc >"$out" ;;
    *) die "$bz: unknown compression of the kernel payload (magic $magic)" ;;
    esac || die "$bz: failed to decompress the kernel payload"
    [ "$(od -An -c -N 4 "$out" | tr -d ' ')" = '177ELF' ] || die "$bz: the payload is not an ELF vmlinux"
}

# Downloads and unpacks the kernel package into $kdir: vmlinux, bzImage, modules/*.ko and
# modules/order (insmod order, dependencies first).
build_kernel() {
    local deb tmp mroot name
    need apt-get "apt"
    need dpkg-deb "dpkg"
    mkdir -p "$vmdir/deb" "$vmdir/kernel"
    deb=$vmdir/deb/${kpkg}_${kver}_amd64.deb
    if [ ! -s "$deb" ]; then
        say "downloading $kpkg $kver"
        tmp=$(mktemp -d "$vmdir/deb/.dl.XXXXXX")
        # apt drops privileges to _apt for downloads; let it write here.
        chmod 777 "$tmp"
        (cd "$tmp" && apt-get download -qq "$kpkg=$kver" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
        local got=("$tmp"/*.deb)
        [ -f "${got[0]}" ] || {
            rm -rf "$tmp"
            die "apt-get download $kpkg=$kver failed (network? apt sources?)"
        }
        mv "${got[0]}" "$deb"
        rm -rf "$tmp"
        # Older downloads of the same package name are not needed any more.
        find "$vmdir/deb" -maxdepth 1 -name "${kpkg}_*.deb" ! -path "$deb" -delete
    fi
    say "unpacking $(basename "$deb")"
    tmp=$(mktemp -d "$vmdir/kernel/.build.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    dpkg-deb -x "$deb" "$tmp/x" || die "dpkg-deb -x $deb failed"
    local bzs=("$tmp"/x/boot/vmlinuz-*) mroots=("$tmp"/x/lib/modules/*/) bz
    bz=${bzs[0]}
    [ -f "$bz" ] || die "$deb has no /boot/vmlinuz-*"
    mroot=${mroots[0]%/}
    [ -d "$mroot" ] || die "$deb has no /lib/modules/<version>"
    mkdir -p "$tmp/out/modules"
    cp "$bz" "$tmp/out/bzImage"
    basename "$mroot" >"$tmp/out/release"
    extract_vmlinux "$bz" "$tmp/out/vmlinux"

    # name -> file of every module in the package (names use _ where file names may use -).
    declare -A path=()
    local f
    while IFS= read -r f; do
        name=${f##*/}
        name=${name%%.ko*}
        path[${name//-/_}]=$f
    done < <(find "$mroot" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
    declare -A builtin=()
    if [ -f "$mroot/modules.builtin" ]; then
        while IFS= read -r f; do
            name=${f##*/}
            name=${name%.ko}
            builtin[${name//-/_}]=1
        done <"$mroot/modules.builtin"
    fi
    declare -A state=()
    order=()
    # Depth-first, dependencies first; each module copied as a plain .ko.
    add_module() {
        local m=${1//-/_} file dst dep deps
        [ -z "${state[$m]:-}" ] || return 0
        state[$m]=1
        if [ -z "${path[$m]:-}" ]; then
            [ -n "${builtin[$m]:-}" ] && return 0
            die "module $m is neither in $kpkg nor built into its kernel"
        fi
        file=${path[$m]}
        dst=$tmp/out/modules/$m.ko
        case $file in
        *.ko.xz) xz -dc "$file" >"$dst" ;;
        *.ko.zst) zstd -qdc "$file" >"$dst" ;;
        *.ko.gz) gzip -dc "$file" >"$dst" ;;
        *) cp "$file" "$dst" ;;
        esac
        deps=$(tr '\0' '\n' <"$dst" | sed -n 's/^depends=//p' | head -n1)
        for dep in ${deps//,/ }; do
            add_module "$dep"
        done
        order+=("$m")
    }
    for name in "${modules[@]}"; do
        add_module "$name"
    done
    printf '%s\n' "${order[@]}" >"$tmp/out/modules/order"
    echo "${modules[*]}" >"$tmp/out/.done"
    rm -rf "$kdir"
    mv "$tmp/out" "$kdir"
    rm -rf "$tmp"
    trap - EXIT
    # Kernels of other versions are not needed any more.
    find "$vmdir/kernel" -mindepth 1 -maxdepth 1 -type d ! -path "$kdir" ! -name '.build.*' -exec rm -rf {} +
}

# The init of the initramfs (busybox sh): loads the modules, mounts the host's / and the
# exchange share, the guest's own proc/sys/dev/tmpfs and cgroup2 with every controller enabled,
# then switch_roots into the host's / and runs /run/vmtest/run.sh (written per run by the host)
# with the host's bash as PID 1. Any failure powers the VM off; the host reports it.
init_script() {
    cat <<'INIT'
#!/bin/sh
export PATH=/bin
fail() {
    echo "vmtest-init: $*" >/dev/console
    echo "vmtest-init: $*" >/newroot/run/vmtest/init-error 2>/dev/null
    # Power off; if that fails, init exiting panics the kernel, which reboots: QEMU exits.
    echo o >/proc/sysrq-trigger 2>/dev/null || echo o >/newroot/proc/sysrq-trigger
    sleep 5
    exit 1
}
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "mount proc"
mount -t devtmpfs -o nosuid,mode=755 devtmpfs /dev || fail "mount devtmpfs"
while read -r m; do
    insmod "/modules/$m.ko" || fail "insmod $m"
done </modules/order
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" hostroot /newroot || fail "mount the host's / (9p hostroot)"
r=/newroot
mount -t tmpfs -o nosuid,nodev,mode=755 tmpfs $r/run || fail "mount /run"
mkdir -p $r/run/vmtest $r/run/lock
mount -t 9p -o "$opts" exchange $r/run/vmtest || fail "mount the exchange share"
mount --move /proc $r/proc || fail "move /proc"
mount --move /dev $r/dev || fail "move /dev"
mkdir -p $r/dev/pts $r/dev/shm $r/dev/mqueue
mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5 devpts $r/dev/pts || fail "mount devpts"
[ -e $r/dev/ptmx ] || ln -s pts/ptmx $r/dev/ptmx
mount -t tmpfs -o nosuid,nodev,mode=1777 shm $r/dev/shm || fail "mount /dev/shm"
mount -t mqueue -o nosuid,nodev,noexec mqueue $r/dev/mqueue || fail "mount mqueue"
mount -t sysfs -o nosuid,nodev,noexec sysfs $r/sys || fail "mount sysfs"
mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 $r/sys/fs/cgroup || fail "mount cgroup2"
mount -t bpf -o nosuid,nodev,noexec,mode=700 bpf $r/sys/fs/bpf 2>/dev/null
for c in $(cat $r/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" >$r/sys/fs/cgroup/cgroup.subtree_control || fail "enable the $c controller"
done
for d in tmp var/tmp; do
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $r/$d || fail "mount /$d"
done
mount -t tmpfs -o nosuid,nodev,mode=700 tmpfs $r/root || fail "mount /root"
ip link set lo up
hostname vmtest
[ -f $r/run/vmtest/run.sh ] || fail "no run.sh in the exchange share"
exec switch_root $r /bin/bash /run/vmtest/run.sh
fail "switch_root failed"
INIT
}

# Builds $initrd (an uncompressed newc cpio: the kernel unpacks it faster than it decompresses
# under TCG) from busybox, the init and the modules of $kdir, when any of them changed.
build_initramfs() {
    [ -x "$busybox" ] || die "$busybox not found (package busybox-static; run hack/setup.sh)"
    local stamp tmp
    stamp="$(sha256sum "$busybox" | cut -d' ' -f1) $(init_script | sha256sum | cut -d' ' -f1) $(sha256sum <"$kdir/modules/order" | cut -d' ' -f1) $(basename "$kdir")"
    initrd=$kdir/initramfs.cpio
    if [ -f "$initrd" ] && [ "$(cat "$kdir/initramfs.stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    say "building the initramfs"
    tmp=$(mktemp -d "$vmdir/.initramfs.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir -p "$tmp/root"/{bin,dev,proc,sys,newroot,modules}
    cp "$busybox" "$tmp/root/bin/busybox"
    local a
    for a in sh mount mkdir insmod switch_root cat echo ip hostname sleep ln; do
        ln -s busybox "$tmp/root/bin/$a"
    done
    init_script >"$tmp/root/init"
    chmod 755 "$tmp/root/init"
    cp "$kdir"/modules/*.ko "$kdir/modules/order" "$tmp/root/modules/"
    (cd "$tmp/root" && find . | LC_ALL=C sort | "$busybox" cpio -o -H newc 2>/dev/null) >"$tmp/initramfs.cpio" ||
        die "cpio failed"
    mv "$tmp/initramfs.cpio" "$initrd"
    echo "$stamp" >"$kdir/initramfs.stamp"
    rm -rf "$tmp"
    trap - EXIT
}

build() {
    mkdir -p "$vmdir"
    exec {lockfd}>"$vmdir/.lock"
    flock "$lockfd" || die "cannot lock $vmdir/.lock"
    resolve_kernel
    if [ "$(cat "$kdir/.done" 2>/dev/null)" != "${modules[*]}" ]; then
        [ -n "${kpkg:-}" ] || die "cannot rebuild $kdir without apt metadata (run apt-get update)"
        build_kernel
    fi
    build_initramfs
    flock -u "$lockfd"
    exec {lockfd}>&-
}

need "$qemu" "package qemu-system-x86 from bookworm-backports"
need flock "util-linux"
build
say "artefacts ready in $(elapsed "$t_start") s ($(basename "$kdir"))"
[ "$build_only" = 0 ] || exit 0

# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------

xdir=$(mktemp -d /tmp/rcrun-vmtest.XXXXXX)
chmod 755 "$xdir"
qpid=""
spid=""
tpids=""
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local pid
    for pid in $qpid $spid $tpids; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    for pid in $qpid $spid $tpids; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$xdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The environment of the command: always PATH and the test variables, plus --env.
{
    echo "export HOME=/root RCRUN_VM=1"
    [ "$disk" = 0 ] || echo "export RCRUN_VM_SCRATCH_DISK=/dev/vda"
    while IFS= read -r name; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e | grep -E '^(RCRUN_|RUST_|CARGO_|PATH$|TERM$|NO_COLOR$)' || true)
    for name in "${env_names[@]}"; do
        if [ -n "${!name+x}" ]; then
            printf 'export %s=%q\n' "$name" "${!name}"
        fi
    done
    for e in "${env_sets[@]}"; do
        printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    done
} >"$xdir/env.sh"
{
    cmd=("$@")
    declare -p cmd
    printf 'cwd=%q\n' "$PWD"
} >"$xdir/cmd.sh"
# Stage two, PID 1 in the host's root: runs the command, reports its status, powers off.
cat >"$xdir/run.sh" <<'RUN'
x=/run/vmtest
poweroff() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 5
}
trap poweroff EXIT
. $x/env.sh
. $x/cmd.sh
if ! cd "$cwd" 2>/dev/null; then
    echo "vmtest: $cwd does not exist in the guest; running in /" >>$x/stderr
    cd /
fi
read -r up _ </proc/uptime
echo "$up" >$x/started
"${cmd[@]}" </dev/null >>$x/stdout 2>>$x/stderr
echo $? >$x/status.tmp
read -r up _ </proc/uptime
echo "$up" >$x/ended
mv $x/status.tmp $x/status
RUN
: >"$xdir/stdout"
: >"$xdir/stderr"

# shellcheck disable=SC2054 # commas are qemu's
accel=(-accel tcg,thread=multi -cpu max)
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then
    accel=(-accel kvm -cpu host)
fi
if [ "$disk" != 0 ]; then
    truncate -s "$disk" "$xdir/scratch.img" || die "--disk: cannot make a sparse file of $disk"
fi
append="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init cgroup_no_v1=all psi=1"
append+=" mitigations=off tsc=reliable no_timer_check random.trust_cpu=on 8250.nr_uarts=1 lpj=8000000"
append+=" cryptomgr.notests"
append+=" ${RCRUN_VM_APPEND:-}"

# Boots the VM with kernel $1 (in the background: $qpid), console to $xdir/console.log.
boot() {
    local dev=(
        -virtfs "local,path=/,mount_tag=hostroot,readonly=on,security_model=none,multidevs=remap"
        -virtfs "local,path=$xdir,mount_tag=exchange,security_model=none,multidevs=remap"
    )
    [ "$disk" = 0 ] || dev+=(-drive "file=$xdir/scratch.img,format=raw,if=virtio,cache=unsafe")
    "$qemu" -name rcrun-vmtest -M pc "${dev[@]}" -m "$mem" -smp "$cpus" "${accel[@]}" \
        -nodefaults -no-user-config -display none -no-reboot \
        -chardev "file,id=con,path=$xdir/console.log" -serial chardev:con \
        -kernel "$1" -initrd "$initrd" -append "$append" \
        </dev/null >"$xdir/qemu.log" 2>&1 &
    qpid=$!
}

kernel=$kdir/vmlinux
[ ! -f "$kdir/no-pvh" ] || kernel=$kdir/bzImage
# The command's output is shown as it comes (the exchange share has no guest cache): one tail per
# stream, which ends once QEMU has ended and it has read the rest.
follow() {
    tail -n +1 -s 0.2 -f --pid="$qpid" "$xdir/stdout" &
    tpids+=" $!"
    tail -n +1 -s 0.2 -f --pid="$qpid" "$xdir/stderr" >&2 &
    tpids+=" $!"
}
t_boot=$(date +%s.%N)
boot "$kernel"
follow
say "booting $(basename "$kdir")/$(basename "$kernel") (qemu pid $qpid, ${accel[1]})"
sleep "$timeout" &
spid=$!
timed_out=0
while :; do
    set +e
    wait -n "$qpid" "$spid"
    set -e
    if ! kill -0 "$qpid" 2>/dev/null; then
        qrc=0
        wait "$qpid" || qrc=$?
        qpid=""
        # QEMU refuses an ELF without the PVH note: remember, and boot the bzImage instead.
        if [ "$kernel" = "$kdir/vmlinux" ] && [ ! -e "$xdir/status" ] && grep -qi 'PVH' "$xdir/qemu.log"; then
            say "no PVH entry in vmlinux, falling back to the bzImage"
            touch "$kdir/no-pvh"
            kernel=$kdir/bzImage
            : >"$xdir/console.log"
            boot "$kernel"
            follow
            continue
        fi
        break
    fi
    if ! kill -0 "$spid" 2>/dev/null; then
        timed_out=1
        kill "$qpid" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$qpid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        qpid=""
        break
    fi
done
kill "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
spid=""
t_end=$(date +%s.%N)
for pid in $tpids; do
    wait "$pid" 2>/dev/null || true
done
tpids=""

show_console() {
    echo "$prog: ---- guest console ($1) ----" >&2
    tail -n "${2:-60}" "$xdir/console.log" >&2 2>/dev/null || true
    if [ -s "$xdir/qemu.log" ]; then
        echo "$prog: ---- qemu ----" >&2
        cat "$xdir/qemu.log" >&2
    fi
    echo "$prog: ----" >&2
}

if [ "$timed_out" = 1 ]; then
    show_console "last lines"
    echo "$prog: timed out after $timeout s (VM killed); the command's output so far is above" >&2
    exit 124
fi
if [ ! -f "$xdir/status" ]; then
    show_console "last lines"
    if [ -s "$xdir/init-error" ]; then
        echo "$prog: the VM failed to boot: $(cat "$xdir/init-error")" >&2
    elif [ -e "$xdir/started" ]; then
        echo "$prog: the VM stopped while the command was running (qemu exit status $qrc): no exit status reported" >&2
    else
        echo "$prog: the VM failed to boot or to start the command (qemu exit status $qrc)" >&2
    fi
    exit 125
fi
status=$(cat "$xdir/status")
[[ $status =~ ^[0-9]+$ ]] || die "bad exit status from the guest: $status"
if [ "$console" = 1 ]; then
    show_console "all" 100000
fi
if [ "$verbose" = 1 ]; then
    started=$(cat "$xdir/started" 2>/dev/null || echo 0)
    ended=$(cat "$xdir/ended" 2>/dev/null || echo 0)
    say "exit status $status; wall $(elapsed "$t_start") s: artefacts $(echo "$t_boot $t_start" | awk '{printf "%.2f", $1-$2}') s, VM $(echo "$t_end $t_boot" | awk '{printf "%.2f", $1-$2}') s (guest uptime at command start $started s, command $(echo "$ended $started" | awk '{printf "%.2f", $1-$2}') s)"
fi
exit "$status"
