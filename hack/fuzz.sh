#!/usr/bin/env bash
# Builds the cargo-fuzz targets under fuzz/ and runs each for a bounded time (issue 10).
#
#   hack/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#   FUZZ_DEV=1 builds unoptimised (hack/test.sh's short pass), FUZZ_SANITIZER=address adds ASan
#
# Prints, per target, the executions libFuzzer made, exec/s and whether it found a crash (the
# input is then in fuzz/artifacts/<target>/); exits non-zero if any target crashed.
# New corpus entries go to fuzz/corpus/<target>/ (git-ignored; the committed seeds are seed-*).
#
# Toolchain choices:
# - Stable Rust only. cargo-fuzz passes nightly-only flags (-Z...), so the build runs with
#   RUSTC_BOOTSTRAP=1, which lets the stable compiler accept them.
# - No sanitizer by default (`--sanitizer none`). ASan does work here (the stable toolchain
#   ships its runtime and RUSTC_BOOTSTRAP=1 unlocks -Zsanitizer=address: checked), but it
#   instruments the whole dependency tree (tokio, tonic, rustls, ...) once more, doubling a
#   build that already dominates a short CI pass and slowing every execution, for code under
#   test that is safe Rust: panics, overflow checks (the fuzz build keeps debug assertions) and
#   the targets' own assertions are what find bugs here. FUZZ_SANITIZER=address turns it on.
# - cargo-fuzz is installed from crates.io (`cargo install cargo-fuzz --locked`) if missing.
# - The fuzz crate is not a member of the main workspace and builds into fuzz/target.
# tar_unpack chroots into a scratch directory while unpacking when run as root (see the target).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="$HOME/.cargo/bin:$PATH"

die() { echo "fuzz: $*" >&2; exit 1; }

all_targets=(config_json cri_to_oci cri_log image_manifest tar_unpack pod_manifest)
seconds=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || die "unknown target $t (have: ${all_targets[*]})"
done
sanitizer=${FUZZ_SANITIZER:-none}
# FUZZ_DEV=1: build the targets unoptimised (cargo fuzz --dev). Several times quicker to build
# from cold, slower per execution: what a short smoke pass in CI wants.
profile=()
[ "${FUZZ_DEV:-0}" = 1 ] && profile=(--dev)

command -v cargo >/dev/null || die "cargo not found"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet || die "cargo install cargo-fuzz failed"
fi
export RUSTC_BOOTSTRAP=1

fuzz() { cargo fuzz "$1" --fuzz-dir "$repo/fuzz" --sanitizer "$sanitizer" "${profile[@]}" "${@:2}"; }

# Seed corpora: a few valid inputs per target, so that the short runs start deep.
seed() { # seed TARGET NAME CONTENT...
    local dir=$repo/fuzz/corpus/$1
    mkdir -p "$dir"
    [ -e "$dir/seed-$2" ] || printf '%b' "$3" >"$dir/seed-$2"
}
mkdir -p fuzz/corpus
seed_tar() { # seed_tar NAME: a small layer with a file, a dir, a symlink, a hard link, a whiteout
    local dir=$repo/fuzz/corpus/tar_unpack
    [ -e "$dir/seed-$1" ] && return
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/l/etc/sub" "$dir"
    echo hello >"$tmp/l/etc/file"
    ln -s file "$tmp/l/etc/link"
    ln "$tmp/l/etc/file" "$tmp/l/etc/hard"
    : >"$tmp/l/etc/.wh.gone"
    : >"$tmp/l/etc/sub/.wh..wh..opq"
    tar -C "$tmp/l" --owner=0 --group=0 --numeric-owner -cf "$tmp/layer.tar" etc
    case $1 in
    plain.tar) cp "$tmp/layer.tar" "$dir/seed-$1" ;;
    layer.tar.gz) gzip -9 -c "$tmp/layer.tar" >"$dir/seed-$1" ;;
    esac
    rm -rf "$tmp"
}
seed_tar plain.tar
seed_tar layer.tar.gz
# A single-byte field or a short protobuf: ContainerConfig{metadata{name:"c"}, image{image:"i"},
# command:["sh"], args:["-c","x"], envs:[{key:"A",value:"b"}]}.
seed cri_to_oci basic '\x0a\x03\x0a\x01c\x12\x03\x0a\x01i\x1a\x02sh\x22\x02-c\x22\x01x\x32\x06\x0a\x01A\x12\x01b'
seed cri_log lines '\x05\x00a\nbc\n\ntail'
seed cri_log long '\x40\x07xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
seed config_json minimal '{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"env":["PATH=/bin"],"user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}],"maskedPaths":["/proc/kcore"],"resources":{"memory":{"limit":1048576}}},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}]}'
seed image_manifest index '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"docker.io/library/busybox:latest"}}]}'
seed image_manifest manifest '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":3}]}'
seed image_manifest config '{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":["A=b"],"Entrypoint":["sh"],"StopSignal":"SIGRTMIN+3","ExposedPorts":{"80/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:3333333333333333333333333333333333333333333333333333333333333333"]}}'
# The example pods seed pod_manifest too (copied as ex-*, which git ignores: not committed twice).
mkdir -p fuzz/corpus/pod_manifest
for f in "$repo"/examples/*.yaml "$repo"/examples/config/*.yaml; do
    [ -e "fuzz/corpus/pod_manifest/ex-${f##*/}" ] || cp "$f" "fuzz/corpus/pod_manifest/ex-${f##*/}"
done

echo "fuzz: building the fuzz targets (sanitizer: $sanitizer)" >&2
build_start=$SECONDS
fuzz build || die "building the fuzz targets failed"
echo "fuzz: build took $((SECONDS - build_start)) s" >&2

# The targets' scratch files (tar_unpack's jail, cri_log's log file) go here, removed after each run.
scratch=$repo/fuzz/target/tmp
crashed=()
summary=()
for t in "${targets[@]}"; do
    log=$repo/fuzz/target/fuzz-$t.log
    mkdir -p "$repo/fuzz/target"
    echo "fuzz: running $t for $seconds s" >&2
    status=0
    # -rss_limit_mb: an input that makes the unpacker or a parser balloon is a finding too.
    rm -rf "$scratch"
    mkdir -p "$scratch"
    TMPDIR=$scratch fuzz run "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    rm -rf "$scratch"
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        result="no crash"
    else
        result="CRASH (exit $status): see $log and fuzz/artifacts/$t/"
        crashed+=("$t")
        grep -A1 -E "panicked at|^SUMMARY|Test unit written to" "$log" >&2 || tail -20 "$log" >&2
    fi
    summary+=("$(printf '%-15s %4s s  %10s execs  %7s exec/s  %s' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "$result")")
done

echo "fuzz: summary" >&2
printf '  %s\n' "${summary[@]}" >&2
[ ${#crashed[@]} -eq 0 ] || die "crashes in: ${crashed[*]}"
