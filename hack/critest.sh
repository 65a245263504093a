#!/usr/bin/env bash
# Runs cri-tools' critest (the CRI validation suite) against rcri, offline and without touching
# the host: everything runs in a private mount, network and IPC namespace (critest must share the
# runtime's network and IPC namespaces: it checks pod IPs, host ports and host IPC), where `/` is
# made rshared (the mount-propagation specs need it), `lo` is brought up, Debian's docker-registry
# serves the stand-in images on 127.0.0.1, rcri pulls them through mirrors of registry.k8s.io,
# gcr.io, public.ecr.aws and docker.io, and pods get a CNI bridge of their own.
#
# usage: CRITEST=/path/to/critest hack/critest.sh [critest args...]
#   e.g. hack/critest.sh -ginkgo.focus='Container Mount'      hack/critest.sh -benchmark
# critest is not built here (it needs Go); build it from cri-tools' source with
# `go test -c -o critest ./cmd/critest` (and ginkgo from its vendor dir for the parallel run).
#
# Environment:
#   CRITEST          the critest binary (required)
#   RCRI, RCRUN      rcri and rcrun binaries (default: the newest of target/{release,debug}/rcri,
#                    and the rcrun next to it); rcri-monitor and rcrictl are taken from rcri's dir
#   CRITEST_RUNTIME  rcrun (default), runc or crun: the OCI runtime rcri drives
#   CRITEST_IMAGES   OCI layout of the stand-in images (default ../shared/critest-images/oci);
#                    the ref -> repository:tag list is images.txt next to it (CRITEST_IMAGE_LIST)
#   GINKGO           the ginkgo CLI for the parallel run (default: ginkgo on PATH; none: no
#                    parallel run); CRITEST_PARALLEL=N nodes (default 2, 0 = no parallel run);
#                    with -benchmark there is no parallel run
#   CRITEST_OUT      where the logs are kept (default target/critest/<UTC time>)
#   CRITEST_KEEP=1   keep rcri's root/state dirs too (under CRITEST_OUT) instead of removing them
#   CRITEST_REGISTRY_PORT  the registry's port (default 5000; always free: the netns is new)
# Exit status: critest's (the serial run's if it failed, else the parallel run's).
# Teardown (also on Ctrl-C): pods removed through rcri, rcri stopped, runtime containers it left
# deleted, the registry and anything else still in the namespaces killed, the temp dir removed;
# what could not be cleaned is reported.
# The teardown functions run from traps, which shellcheck does not follow.
# shellcheck disable=SC2317
set -euo pipefail

die() { echo "critest.sh: $*" >&2; exit 2; }
say() { echo "critest.sh: $*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
self=$repo/hack/critest.sh

# Inside the namespaces: everything from the registry to teardown of rcri's pods.
inner() {
    # Globals, not locals: the EXIT trap runs after this function has returned.
    work=$1
    shift
    bin=$work/bin state=$work/rcri sock=$work/rcri/rcri.sock
    registry=127.0.0.1:${CRITEST_REGISTRY_PORT:-5000}
    registry_pid="" rcri_pid=""

    remove_pods() {
        local pods
        mapfile -t pods < <("$bin/rcrictl" -r "unix://$sock" -t 30 pods -q 2>/dev/null)
        [ ${#pods[@]} = 0 ] || "$bin/rcrictl" -r "unix://$sock" -t 60 rmp -f "${pods[@]}" >/dev/null 2>&1 || true
    }

    # Only what this namespace holds: pods, rcri, the runtime's leftovers, the registry, then any
    # process still in this network namespace (all of them ours: the namespace is private).
    teardown() {
        set +e
        # A second Ctrl-C (or the TERM both a group kill and the outer shell send) must not cut
        # the teardown short.
        trap '' INT TERM
        # This namespace and the pods' (pinned under rcri's state dir until the pods go): what
        # is left in any of them at the end is ours.
        local netns_ids f
        netns_ids=$(readlink /proc/self/ns/net)
        while read -r f; do
            netns_ids="$netns_ids net:[$(stat -L -c %i "$f" 2>/dev/null)]"
        done < <(findmnt -rn -o TARGET,FSTYPE | awk -v d="$state/" 'index($1, d) == 1 && $2 == "nsfs" { print $1 }')
        if [ -n "$rcri_pid" ] && kill -0 "$rcri_pid" 2>/dev/null; then
            remove_pods
            kill -TERM "$rcri_pid"
            for _ in $(seq 100); do kill -0 "$rcri_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$rcri_pid" 2>/dev/null
            wait "$rcri_pid" 2>/dev/null
        fi
        if [ -d "$state/runtime" ]; then
            local c
            for c in $("$runtime" --root "$state/runtime" list -q 2>/dev/null); do
                say "leftover runtime container $c: deleting it"
                "$runtime" --root "$state/runtime" delete --force "$c" >/dev/null 2>&1
            done
        fi
        if [ -n "$registry_pid" ]; then
            kill -TERM "$registry_pid" 2>/dev/null
            wait "$registry_pid" 2>/dev/null
        fi
        local ppid ns p left=""
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            # This shell and its parent are not leftovers.
            [ "$p" = $$ ] || [ "$p" = "$PPID" ] || [ "$p" = "$BASHPID" ] && continue
            ns=$(readlink "/proc/$p/ns/net" 2>/dev/null) || continue
            case " $netns_ids " in *" $ns "*) ;; *) continue ;; esac
            # Nor is our own pipeline (readlink, the subshell).
            ppid=$(cut -d' ' -f4 "/proc/$p/stat" 2>/dev/null) || continue
            [ "$ppid" = $$ ] || [ "$ppid" = "$BASHPID" ] && continue
            left="$left $p($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-60))"
            kill -KILL "$p" 2>/dev/null
        done
        [ -z "$left" ] || say "killed leftover processes:$left"
    }
    trap teardown EXIT
    # critest runs in the background and is waited for: bash runs a trap only between commands,
    # and `wait` is one it interrupts (a foreground critest would delay the trap to its end).
    critest_pid=""
    on_signal() {
        [ -z "$critest_pid" ] || kill -TERM "$critest_pid" 2>/dev/null
        exit "$1"
    }
    trap 'on_signal 130' INT
    trap 'on_signal 143' TERM

    mount --make-rshared /
    ip link set lo up

    # The registry, and the stand-in images pushed under the names critest pulls.
    mkdir -p "$work/registry"
    cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $registry
EOF
    setsid docker-registry serve "$work/registry.yml" >"$out/registry.log" 2>&1 &
    registry_pid=$!
    local ref name n=0 first=1
    while read -r ref name; do
        case $ref in '' | '#'*) continue ;; esac
        local tries=0
        until skopeo --insecure-policy copy --quiet --all --dest-tls-verify=false \
            "oci:$images:$ref" "docker://$registry/$name" >>"$out/push.log" 2>&1; do
            tries=$((tries + 1))
            # Only the first push waits for the registry to come up.
            if [ "$first" != 1 ] || [ $tries -ge 50 ]; then die "pushing $ref as $name failed: see $out/push.log"; fi
            sleep 0.2
        done
        first=0
        n=$((n + 1))
    done <"$image_list"
    say "pushed $n images to $registry"

    # rcri's config: every registry critest pulls from is the local one, never the real one.
    {
        echo "[registry]"
        echo "insecure = [\"$registry\"]"
        echo "connect_timeout_secs = 5"
        echo "read_timeout_secs = 30"
        for host in registry.k8s.io gcr.io public.ecr.aws docker.io; do
            echo "[registry.mirrors.\"$host\"]"
            echo "endpoints = [\"http://$registry\"]"
            echo "fallback_to_upstream = false"
        done
    } >"$work/rcri.toml"

    mkdir -p "$work/cni"
    cat >"$work/cni/10-critest.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "rcri-critest",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$work/cni-ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF

    mkdir -p "$state"
    # Own sessions (setsid): a Ctrl-C at the terminal reaches critest, not rcri and the
    # registry, which teardown still needs to remove the pods cleanly.
    setsid "$bin/rcri" serve --config "$work/rcri.toml" --listen "$sock" \
        --root "$state/root" --state "$state/state" \
        --runtime "$runtime" --runtime-root "$state/runtime" \
        --cni-conf-dir "$work/cni" --cni-bin-dir "$cni_bin_dirs" \
        --log-level "${CRITEST_RCRI_LOG:-info}" </dev/null >"$out/rcri.log" 2>&1 &
    rcri_pid=$!
    local i
    for i in $(seq 200); do
        kill -0 "$rcri_pid" 2>/dev/null || die "rcri exited at start: see $out/rcri.log"
        "$bin/rcrictl" -r "unix://$sock" -t 2 version >/dev/null 2>&1 && break
        [ "$i" = 200 ] && die "rcri did not answer Version within 20s: see $out/rcri.log"
        sleep 0.1
    done
    say "rcri (pid $rcri_pid, a copy of $RCRI built $(date -u -r "$RCRI" +%H:%M:%SZ), runtime $runtime) on $sock"

    # Runs a critest command line in the background into LOG, shown as it grows; sets status.
    run_critest() {
        local log=$1 tail_pid
        shift
        : >"$log"
        # critest's own scratch dirs (cri-test*, podLogTest*: volumes and log dirs it mounts
        # into pods) go under the work dir, so the teardown removes them with everything else.
        mkdir -p "$work/tmp"
        TMPDIR=$work/tmp "$@" >"$log" 2>&1 &
        critest_pid=$!
        tail -n +1 -f --pid="$critest_pid" "$log" &
        tail_pid=$!
        status=0
        wait "$critest_pid" || status=$?
        critest_pid=""
        wait "$tail_pid" || true
    }

    local endpoint=(--runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock")
    local serial=0 parallel=0
    say "serial run: $CRITEST ${endpoint[*]} $*"
    run_critest "$out/critest-serial.log" "$CRITEST" "${endpoint[@]}" "$@"
    serial=$status
    local arg benchmark=0
    for arg in "$@"; do
        case $arg in -benchmark | --benchmark | -benchmark=true | --benchmark=true) benchmark=1 ;; esac
    done
    # Benchmarks measure one runtime under a known load: no second, parallel pass of them.
    [ "$benchmark" = 0 ] || ginkgo=""
    if [ -n "$ginkgo" ] && [ "$nodes" -gt 1 ]; then
        # Whatever the serial run left (a failed spec may skip its cleanup) must not count here.
        remove_pods
        say "parallel run ($nodes nodes, ginkgo $ginkgo)"
        # critest runs `ginkgo` from PATH for -parallel.
        PATH=$(dirname "$ginkgo"):$PATH run_critest "$out/critest-parallel.log" \
            "$CRITEST" "${endpoint[@]}" -parallel "$nodes" "$@"
        parallel=$status
    fi

    echo
    echo "================ critest summary (logs: $out) ================"
    local log
    for log in "$out/critest-serial.log" "$out/critest-parallel.log"; do
        [ -f "$log" ] || continue
        echo "--- $(basename "$log" .log)"
        grep -E '^(Ran [0-9]+ of [0-9]+ Specs|(SUCCESS|FAIL)! -- |Ginkgo ran |Test Suite (Passed|Failed))' "$log" || true
        # Ginkgo's own list of failures, between "Summarizing" and the "Ran N of M" line.
        sed -n '/^Summarizing [0-9]* Failure/,/^Ran [0-9]* of/p' "$log" | grep -E '^\s*\[FAIL\]' || true
    done
    echo "serial exit status: $serial${ginkgo:+, parallel exit status: $parallel}"
    [ "$serial" != 0 ] && return "$serial"
    return "$parallel"
}

# Everything below runs from functions: bash has then read the whole file before it runs any
# of it, so editing this script during a long run cannot break that run.
main() {
    [ "$(id -u)" = 0 ] || die "must run as root (namespaces, mounts, containers)"
    [ -n "${CRITEST:-}" ] || die "set CRITEST=/path/to/critest (cri-tools' critest binary; see the usage at the top of $self)"
    [ -x "$CRITEST" ] || die "CRITEST=$CRITEST is not an executable file"
    CRITEST=$(realpath "$CRITEST")
    for tool in unshare mount ip docker-registry skopeo; do
        command -v "$tool" >/dev/null || die "$tool not found: run hack/setup.sh"
    done

    if [ -z "${RCRI:-}" ]; then
        for cand in "$repo/target/release/rcri" "$repo/target/debug/rcri"; do
            [ -x "$cand" ] || continue
            if [ -z "${RCRI:-}" ] || [ "$cand" -nt "$RCRI" ]; then RCRI=$cand; fi
        done
        [ -n "${RCRI:-}" ] || die "no rcri built: cargo build -p rcri -p rcrun (or set RCRI=)"
    fi
    [ -x "$RCRI" ] || die "RCRI=$RCRI is not an executable file"
    rcri_dir=$(dirname "$(realpath "$RCRI")")
    RCRUN=${RCRUN:-$rcri_dir/rcrun}
    for b in "$RCRI" "$rcri_dir/rcri-monitor" "$rcri_dir/rcrictl"; do
        [ -x "$b" ] || die "$b missing: cargo build -p rcri"
    done

    case ${CRITEST_RUNTIME:-rcrun} in
        rcrun) [ -x "$RCRUN" ] || die "RCRUN=$RCRUN missing: cargo build -p rcrun" ;;
        runc | crun) command -v "$CRITEST_RUNTIME" >/dev/null || die "$CRITEST_RUNTIME not found on PATH" ;;
        *) die "CRITEST_RUNTIME must be rcrun, runc or crun, not ${CRITEST_RUNTIME}" ;;
    esac

    images=${CRITEST_IMAGES:-$repo/../shared/critest-images/oci}
    [ -f "$images/index.json" ] || die "no OCI layout at $images (set CRITEST_IMAGES=)"
    images=$(realpath "$images")
    image_list=${CRITEST_IMAGE_LIST:-$(dirname "$images")/images.txt}
    [ -f "$image_list" ] || die "no image list at $image_list (set CRITEST_IMAGE_LIST=)"

    cni_bin_dirs=""
    for d in /opt/cni/bin /usr/lib/cni; do
        [ -x "$d/bridge" ] && cni_bin_dirs=${cni_bin_dirs:+$cni_bin_dirs:}$d
    done
    [ -n "$cni_bin_dirs" ] || die "no CNI plugins (bridge) in /opt/cni/bin or /usr/lib/cni: run hack/setup.sh"

    ginkgo=""
    nodes=${CRITEST_PARALLEL:-2}
    if [ "$nodes" -gt 1 ]; then
        ginkgo=${GINKGO:-$(command -v ginkgo || true)}
        [ -z "$ginkgo" ] || [ -x "$ginkgo" ] || die "GINKGO=$ginkgo is not an executable file"
        [ -z "$ginkgo" ] && say "no ginkgo on PATH (nor GINKGO=): serial run only"
        [ -z "$ginkgo" ] || ginkgo=$(realpath "$ginkgo")
    fi

    out=${CRITEST_OUT:-$repo/target/critest/$(date -u +%Y%m%dT%H%M%SZ)}
    mkdir -p "$out"
    out=$(realpath "$out")
    work=$(mktemp -d /tmp/rcri-critest.XXXXXX)
    chmod 755 "$work"

    # A snapshot of the binaries: a cargo build during the run must not swap rcri-monitor or rcrun
    # under a running rcri.
    mkdir "$work/bin"
    cp "$RCRI" "$work/bin/rcri"
    cp "$rcri_dir/rcri-monitor" "$rcri_dir/rcrictl" "$work/bin/"
    if [ "${CRITEST_RUNTIME:-rcrun}" = rcrun ]; then
        cp "$RCRUN" "$work/bin/rcrun"
        runtime=$work/bin/rcrun
    else
        runtime=$(command -v "$CRITEST_RUNTIME")
    fi

    netns_before=$(ip netns list 2>/dev/null | sort)
    cleanup() {
        set +e
        local mounts procs
        mounts=$(findmnt -rn -o TARGET | grep -F "$work" || true)
        [ -z "$mounts" ] || say "mounts left on the host under $work: $mounts"
        procs=$(pgrep -a -f "$work" || true)
        [ -z "$procs" ] || say "processes left (not removing $work): $procs"
        if [ -z "$mounts" ] && [ -z "$procs" ]; then
            if [ "${CRITEST_KEEP:-}" = 1 ]; then
                mv "$work" "$out/work" && say "kept rcri's dirs in $out/work"
            else
                rm -rf "$work"
            fi
        fi
        local netns_after
        netns_after=$(ip netns list 2>/dev/null | sort)
        # rcri pins pods' namespaces in its own state dir, never in /run/netns; a new name here is
        # someone else's (other tests on this host), shown in case it is not.
        local new_netns
        new_netns=$(comm -13 <(echo "$netns_before") <(echo "$netns_after") | tr '\n' ' ')
        [ -z "${new_netns// /}" ] || say "note: new in ip netns list during the run (not created by this script): $new_netns"
    }
    trap cleanup EXIT

    export CRITEST GINKGO_NO_COLOR=TRUE
    export out images image_list runtime cni_bin_dirs ginkgo nodes RCRI
    # Without --fork unshare execs the inner shell itself: $! is that shell. A stop asked of
    # this script is passed on to it (it stops critest and tears down), and this shell waits for
    # that to finish before its own checks.
    unshare --mount --net --ipc -- bash "$self" __inner "$work" "$@" &
    inner_pid=$!
    trap 'kill -TERM "$inner_pid" 2>/dev/null || true' INT TERM
    local status=0
    while :; do
        status=0
        wait "$inner_pid" || status=$?
        # A trapped signal interrupts `wait` (status > 128) while the inner shell still runs.
        kill -0 "$inner_pid" 2>/dev/null || break
    done
    return $status
}

if [ "${1:-}" = __inner ]; then
    shift
    inner "$@"; exit $?
fi
main "$@"; exit $?
