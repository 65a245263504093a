#!/usr/bin/env bash
# Runs the opencontainers/runtime-tools validation suite against an OCI runtime (rcrun by
# default, or any runc-compatible binary) and prints per-file ok / not ok / skip counts.
#
#   RUNTIME_TOOLS=/path/to/runtime-tools hack/oci-validation.sh [options] [TEST...]
#
# RUNTIME_TOOLS  a runtime-tools checkout built by you with
#                `make runtimetest validation-executables` (see README.md, "Conformance");
#                the project never vendors or builds it.
# RUNTIME        the runtime binary (default: <repo>/target/debug/rcrun; e.g. /usr/sbin/runc).
# TEST           test names (validation/<name>/<name>.t) or shell patterns such as
#                'linux_cgroups_*'; default: every test file of the checkout.
#
# Options:
#   --timeout SECS  per test file (default 120); a hung test is killed by its process group
#   --logs DIR      keep each file's TAP output (NAME.tap), stderr (NAME.stderr) and the summary
#   --strict        exit 1 unless every file passed or was skipped (default: always exit 0,
#                   this is a report, not a gate)
#   --allow A,B,... files whose failure --strict forgives (the known exceptions of a machine);
#                   they are still run and reported, marked "(allowed)"
#   -v, --verbose   print each file's full TAP output and stderr
#   -h, --help
#
# Each file runs alone, as root, inside a private mount namespace (so mounts that a test or the
# runtime leaves behind vanish with it) and pid namespace (so no process outlives the run),
# with its own TMPDIR (where the suite extracts its
# rootfs-<arch>.tar.gz into bundles) and with the runtime wrapped to use a private `--root`
# state directory. After each file, containers still known to the runtime are force-deleted,
# processes still rooted in the file's temp dir are killed (by pid), its mounts are detached,
# empty cgroups the suite names (/cgrouptest, testdir/cgrouptest/container) are removed, and
# its temp dir is deleted.
set -uo pipefail

die() { echo "oci-validation: $*" >&2; exit 2; }

self=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$self")/.." && pwd)

orig_args=("$@")
timeout=120
logs=""
strict=0
allow=""
verbose=0
patterns=()
while [ $# -gt 0 ]; do
    case "$1" in
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --logs) [ $# -ge 2 ] || die "--logs needs a directory"; logs=$2; shift 2 ;;
    --logs=*) logs=${1#*=}; shift ;;
    --strict) strict=1; shift ;;
    --allow) [ $# -ge 2 ] || die "--allow needs a list"; allow="$allow,$2"; shift 2 ;;
    --allow=*) allow="$allow,${1#*=}"; shift ;;
    -v | --verbose) verbose=1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$self" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; patterns+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) patterns+=("$1"); shift ;;
    esac
done
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"

[ "$(id -u)" -eq 0 ] || die "must run as root (the suite creates containers, mounts and cgroups)"
[ -n "${RUNTIME_TOOLS:-}" ] || die "set RUNTIME_TOOLS to a runtime-tools checkout built with
    'make runtimetest validation-executables' (see README.md, Conformance)"
tools=$(cd "$RUNTIME_TOOLS" 2>/dev/null && pwd) || die "RUNTIME_TOOLS=$RUNTIME_TOOLS: no such directory"

case "$(uname -m)" in
x86_64) goarch=amd64 ;;
i?86) goarch=386 ;;
aarch64) goarch=arm64 ;;
armv*) goarch=arm ;;
ppc64le) goarch=ppc64le ;;
s390x) goarch=s390x ;;
riscv64) goarch=riscv64 ;;
*) goarch=$(uname -m) ;;
esac
[ -f "$tools/rootfs-$goarch.tar.gz" ] \
    || die "$tools/rootfs-$goarch.tar.gz missing: the suite has no rootfs for this architecture"
[ -x "$tools/runtimetest" ] \
    || die "$tools/runtimetest missing: run 'make runtimetest validation-executables' there"

runtime=${RUNTIME:-$repo/target/debug/rcrun}
runtime_abs=$(command -v "$runtime" 2>/dev/null) \
    || die "runtime $runtime not found (build rcrun with 'cargo build -p rcrun', or set RUNTIME)"
runtime_abs=$(readlink -f "$runtime_abs")
[ -x "$runtime_abs" ] || die "runtime $runtime_abs is not executable"

for cmd in unshare setsid tar awk findmnt; do
    command -v "$cmd" >/dev/null || die "$cmd not found (util-linux, tar, gawk/mawk)"
done

# Re-run inside a private mount namespace: mounts left by a test or by the runtime vanish
# with the namespace, and nothing propagates back to the host. And in a pid namespace of its
# own, with this script as its init: when the script ends, the kernel kills whatever a test
# or a container left running, even what no runtime knows about any more.
outer_ns=$(readlink /proc/self/ns/mnt)
if [ "${OCI_VALIDATION_OUTER_NS:-}" = "" ]; then
    export OCI_VALIDATION_OUTER_NS=$outer_ns
    exec unshare --mount --propagation private --pid --fork --kill-child=SIGTERM --mount-proc \
        -- bash "$self" ${orig_args[@]+"${orig_args[@]}"}
fi
[ "$OCI_VALIDATION_OUTER_NS" != "$outer_ns" ] || die "unshare did not give a new mount namespace"
unset OCI_VALIDATION_OUTER_NS

# ---- inside the private mount namespace ----------------------------------------------------

# The test files, sorted, filtered by the patterns.
tests=()
while IFS= read -r t; do
    name=$(basename "$t" .t)
    if [ ${#patterns[@]} -gt 0 ]; then
        hit=0
        for p in "${patterns[@]}"; do
            # shellcheck disable=SC2053 # patterns are globs on purpose
            [[ "$name" == $p || "$name.t" == $p ]] && hit=1
        done
        [ $hit = 1 ] || continue
    fi
    tests+=("$t")
done < <(find "$tools/validation" -mindepth 2 -maxdepth 2 -name '*.t' -type f -perm -u+x | sort)
[ ${#tests[@]} -gt 0 ] || die "no test executables found under $tools/validation${patterns:+ matching ${patterns[*]}}
    (run 'make runtimetest validation-executables' in the checkout)"

work=$(mktemp -d /tmp/oci-validation.XXXXXX) || die "mktemp failed"
# searchable by all: with a user namespace the container's root is another host uid, and
# the harness must not be what keeps it out of the bundle
chmod 755 "$work"
state="$work/state"
mkdir -p "$state" "$work/bin" "$work/run"
if [ -n "$logs" ]; then
    mkdir -p "$logs" || die "cannot create $logs"
    logs=$(cd "$logs" && pwd)
fi

# The suite calls "$RUNTIME create|start|state|kill|delete ..." with no --root: give it a
# wrapper that adds a private state directory, so its containers never mix with others'.
wrapper="$work/bin/runtime"
{
    echo '#!/bin/sh'
    printf 'exec %q --root %q "$@"\n' "$runtime_abs" "$state"
} >"$wrapper"
chmod 755 "$wrapper"

current_pid=""

kill_group() { # pid: the test's process group (it is its leader, via setsid)
    kill -TERM -- "-$1" 2>/dev/null
    kill -TERM "$1" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        alive "$1" || return 0
        sleep 0.2
    done
    kill -KILL -- "-$1" 2>/dev/null
    kill -KILL "$1" 2>/dev/null
}

alive() { # pid: exists and is not a zombie
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# Empty cgroups named as the suite names them (validation/../cgroups: /cgrouptest and
# testdir/cgrouptest/container, relative to the caller's cgroup): print and remove them.
suite_cgroups() {
    local mnt
    while IFS= read -r mnt; do
        find "$mnt" -maxdepth 8 -depth -type d \( -name cgrouptest -o -name testdir \) 2>/dev/null
    done < <(findmnt -rn -t cgroup,cgroup2 -o TARGET)
}

cleanup_cgroups() {
    local d left=()
    while IFS= read -r d; do
        # innermost first (find -depth); rmdir fails on a cgroup that still has tasks
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        [ -d "$d" ] && left+=("$d")
    done < <(suite_cgroups)
    [ ${#left[@]} -eq 0 ] || printf '    cgroup still busy: %s\n' "${left[@]}" >&2
}

cleanup_dir() { # dir: a test file's temp dir
    local dir=$1 id p root m
    # containers the runtime still knows about
    for id in $("$wrapper" list -q 2>/dev/null) $(ls "$state" 2>/dev/null); do
        "$wrapper" delete --force "$id" >/dev/null 2>&1 || true
    done
    rm -rf "${state:?}"/* 2>/dev/null
    # processes whose root or cwd is still inside the bundles (containers the runtime lost)
    for p in /proc/[0-9]*; do
        root=$(readlink "$p/root" 2>/dev/null) || continue
        case "$root/" in "$dir"/*) kill -KILL "${p#/proc/}" 2>/dev/null ;; esac
        root=$(readlink "$p/cwd" 2>/dev/null) || continue
        case "$root/" in "$dir"/*) kill -KILL "${p#/proc/}" 2>/dev/null ;; esac
    done
    # mounts under it, innermost first
    while IFS= read -r m; do
        umount -l "$m" 2>/dev/null
    done < <(findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d) == 1' | sort -r)
    rm -rf "$dir" 2>/dev/null || { sleep 1; rm -rf "$dir" 2>/dev/null; }
}

# shellcheck disable=SC2317 # called by the EXIT trap
on_exit() {
    [ -n "$current_pid" ] && kill_group "$current_pid"
    cleanup_dir "$work/run"
    cleanup_cgroups 2>/dev/null
    rm -rf "$work"
}
trap on_exit EXIT
trap 'echo "oci-validation: interrupted" >&2; exit 130' INT TERM HUP

# Counts of a test file's TAP output: ok not_ok skip todo plan lines yaml_error.
# A file may print several TAP streams one after the other (the suite does): plans add up,
# plan -1 means none. yaml_error: a YAML diagnostic with an "error" key (some files report
# their failure that way, with no test line at all).
tap_counts() {
    awk '
        function directive(s,   l) {
            l = tolower(s)
            if (l ~ /#[ \t]*skip/) return "skip"
            if (l ~ /#[ \t]*todo/) return "todo"
            return ""
        }
        /^ok([ \t]|$)/     { n++; d = directive($0); if (d == "skip") skip++; else if (d == "todo") todo++; else ok++ }
        /^not ok([ \t]|$)/ { n++; d = directive($0); if (d == "todo") todo++; else if (d == "skip") skip++; else notok++ }
        /^1\.\.[0-9]+/     { split($1, a, "\\.\\."); plan += a[2]; planned = 1 }
        /^[ \t]+"?error"?:/ { yerr = 1 }
        END { if (!planned) plan = -1; print ok + 0, notok + 0, skip + 0, todo + 0, plan, n + 0, yerr + 0 }
    ' "$1"
}

if [ "$(findmnt -rn -o FSTYPE /sys/fs/cgroup 2>/dev/null)" = cgroup2 ]; then cgv=v2
elif findmnt -rn -t cgroup2 >/dev/null 2>&1; then cgv="v1 (hybrid, v2 at $(findmnt -rn -t cgroup2 -o TARGET | head -1))"
else cgv=v1; fi
version=$("$runtime_abs" --version 2>/dev/null | head -1)
echo "runtime:       $runtime_abs${version:+ ($version)}"
echo "runtime-tools: $tools ($(git -C "$tools" describe --always --tags --dirty 2>/dev/null || echo 'not a git checkout'))"
echo "kernel:        $(uname -r), cgroup $cgv"
echo "tests:         ${#tests[@]} files, timeout ${timeout}s each"
echo

cleanup_cgroups # leftovers of an earlier run would make the cgroup tests fail

declare -A status_count=()
results=()
tot_ok=0 tot_notok=0 tot_skip=0 n_allowed=0
printf '%-34s %-7s %5s %7s %5s %7s\n' FILE RESULT OK NOT-OK SKIP TIME
for t in "${tests[@]}"; do
    name=$(basename "$t" .t)
    dir="$work/run/$name"
    mkdir -p "$dir/tmp"
    out="$dir/stdout" err="$dir/stderr"
    start=${EPOCHREALTIME/[.,]/}
    # setsid: the test leads its own process group, so a hung test is killed with all it forked
    (cd "$tools" && TMPDIR="$dir/tmp" RUNTIME="$wrapper" exec setsid "$t") \
        >"$out" 2>"$err" </dev/null &
    current_pid=$!
    timed_out=0
    deadline=$((start + timeout * 1000000)) # microseconds
    while alive "$current_pid"; do
        if [ "${EPOCHREALTIME/[.,]/}" -ge $deadline ]; then
            timed_out=1
            kill_group "$current_pid"
            break
        fi
        sleep 0.1
    done
    wait "$current_pid" 2>/dev/null
    rc=$?
    current_pid=""
    elapsed=$(((${EPOCHREALTIME/[.,]/} - start) / 100000))
    elapsed="$((elapsed / 10)).$((elapsed % 10))"

    read -r ok notok skip _todo plan n yerr < <(tap_counts "$out")
    # Some files report no test line when all is well: the *_fail files print nothing and
    # exit 0 when the runtime refused the bad config (util.Fatal, exit 1, when it did not);
    # the hook files print "1..0" and an "error" diagnostic only when something went wrong.
    if [ $timed_out = 1 ]; then res=TIMEOUT
    elif [ "$notok" -gt 0 ]; then res=FAIL
    elif [ "$rc" -ne 0 ]; then res=ERROR
    elif [ "$n" -gt 0 ] && [ "$n" -ne "$plan" ]; then res=ERROR # no plan, or a wrong one
    elif [ "$n" -eq 0 ] && [ "$yerr" = 1 ]; then res=ERROR # no test, only an error diagnostic
    elif [ "$n" -gt 0 ] && [ "$ok" -eq 0 ]; then res=SKIP # every test skipped
    else res=PASS; fi
    status_count[$res]=$((${status_count[$res]:-0} + 1))
    tot_ok=$((tot_ok + ok)) tot_notok=$((tot_notok + notok)) tot_skip=$((tot_skip + skip))

    allowed=""
    case $res in PASS | SKIP) ;; *) [[ ",$allow," == *",$name,"* ]] && allowed=" (allowed)" ;; esac
    [ -n "$allowed" ] && n_allowed=$((n_allowed + 1))
    results+=("$name $res$allowed")
    printf '%-34s %-7s %5d %7d %5d %6ss%s\n' "$name" "$res" "$ok" "$notok" "$skip" "$elapsed" "$allowed"
    if [ $verbose = 1 ]; then
        sed 's/^/    | /' "$out"
        [ -s "$err" ] && sed 's/^/    ! /' "$err"
    else
        case $res in
        FAIL) grep -E '^not ok' "$out" | grep -viE '#[[:space:]]*(todo|skip)' | head -8 | cut -c1-150 | sed 's/^/    /' ;;
        ERROR | TIMEOUT)
            [ $res = TIMEOUT ] && echo "    killed after ${timeout}s"
            [ $res = ERROR ] && echo "    exit status $rc, plan ${plan/#-1/none}, $n results"
            [ "$n" -eq 0 ] && grep -E '^[[:space:]]+"?error"?:' "$out" | head -2 | cut -c1-150 | sed 's/^ */    tap: /'
            grep -v '^[[:space:]]*$' "$err" | tail -3 | cut -c1-150 | sed 's/^/    stderr: /' ;;
        SKIP) grep -iE '#[[:space:]]*skip' "$out" | head -2 | cut -c1-150 | sed 's/^/    /' ;;
        esac
    fi
    if [ -n "$logs" ]; then
        cp "$out" "$logs/$name.tap"
        cp "$err" "$logs/$name.stderr"
    fi
    cleanup_dir "$dir"
    cleanup_cgroups
done

total=${#tests[@]}
passed=${status_count[PASS]:-0}
skipped=${status_count[SKIP]:-0}
failed=$((total - passed - skipped))
{
    echo
    echo "Summary ($runtime_abs)"
    printf '  %-8s %4s\n' RESULT FILES
    for s in PASS SKIP FAIL ERROR TIMEOUT; do
        printf '  %-8s %4d\n' "$s" "${status_count[$s]:-0}"
    done
    printf '  %-8s %4d   (%d ok, %d not ok, %d skip)\n' total "$total" "$tot_ok" "$tot_notok" "$tot_skip"
    if [ $failed -gt 0 ]; then
        echo "  not passed:"
        for r in "${results[@]}"; do
            case ${r#* } in PASS | SKIP) ;; *) echo "    $r" ;; esac
        done
    fi
    echo "files: $passed passed, $failed failed, $skipped skipped"
} | tee ${logs:+"$logs/summary.txt"}

[ $strict = 1 ] && [ $((failed - n_allowed)) -gt 0 ] && exit 1
exit 0
