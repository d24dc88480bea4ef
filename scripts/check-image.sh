#!/usr/bin/env bash
# Build the image and check it against the built-in Forgejo simulator:
#   1. build (scripts/build-image.sh) and report the image size;
#   2. run it against the simulator: tasks complete, the service runs as uid 1000,
#      /data (a fresh named volume) gets the state files;
#   3. the HEALTHCHECK reports healthy;
#   4. `stop` (SIGTERM) while tasks run: they drain, exit code 0, and how long it took.
# Prints a transcript and a summary; exits non-zero if a check fails. Not part of the
# test suite (too heavy). docs/container-check.txt is its output on the dev machine:
#
#     scripts/check-image.sh --local-base --offline | tee docs/container-check.txt
#
# The simulator runs from the same image (`forgejo-scheduler sim`) in a container
# with a private network namespace and no network (--network none); the service's
# container joins that namespace (--network container:SIM), so the two talk over
# their shared loopback. No host port is used (metrics are read with `exec`), no
# bridge or NAT rule is created, nothing leaves the machine.
#
# Needs: docker or podman, python3 on the host, root (the token files are given to
# uid 1000); with --offline, the Python whose pip downloads the wheels.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/check-image.sh [options]

  --tag NAME        image to build and check (default forgejo-scheduler:check)
  --base IMAGE      BASE build arg (default: the Dockerfile's, python:3.11-slim-bookworm)
  --local-base      build the base with scripts/make-local-base.sh (debootstrap) if
                    localhost/forgejo-scheduler-base does not exist, and use it
                    (with --offline the build then runs without network)
  --offline         pass --offline to build-image.sh (wheels downloaded on the host)
  --no-build        check the existing image --tag
  --engine ENGINE   docker or podman (default: as build-image.sh chooses)
  --python PATH     for --offline: the Python whose pip downloads the wheels
                    (default: as build-image.sh chooses)
  --jobs N          jobs per simulated instance (2 instances, 1 job/s each, 1-3 s
                    long; default 20). The stop comes after N have finished, right
                    after a task started, so that the drain has work to wait for
  -h, --help        this text
EOF
}

die() { echo "check-image.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tag=forgejo-scheduler:check
base=""
local_base=0
offline=0
build=1
engine=""
python=""
jobs=20
while (($#)); do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --base) base=${2:?--base needs a value}; shift 2 ;;
        --local-base) local_base=1; shift ;;
        --offline) offline=1; shift ;;
        --no-build) build=0; shift ;;
        --engine) engine=${2:?--engine needs a value}; shift 2 ;;
        --python) python=${2:?--python needs a value}; shift 2 ;;
        --jobs) jobs=${2:?--jobs needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer"
command -v python3 >/dev/null || die "python3 is not installed on this host"

# shellcheck source=scripts/image-engine.sh
. "$repo/scripts/image-engine.sh"
engine_select "$engine" || die "no usable container engine"
E=("${ENGINE_CMD[@]}")

work=$(mktemp -d /tmp/forgejo-scheduler-check.XXXXXX)
ctr=fs-check-$$
sim=fs-check-sim-$$
vol=fs-check-data-$$
cleanup() {
    local rc=$?
    "${E[@]}" rm -f -v "$ctr" >/dev/null 2>&1 || true
    "${E[@]}" rm -f -v "$sim" >/dev/null 2>&1 || true
    "${E[@]}" volume rm -f "$vol" >/dev/null 2>&1 || true
    if ((rc == 0)); then rm -rf "$work"; else echo "check-image.sh: logs kept in $work" >&2; fi
}
trap cleanup EXIT

# podman prints errors about health check timers when there is no systemd; they do
# not concern the image (`healthcheck run` below works on demand).
quiet() { "$@" 2> >(grep -v 'systemd' >&2); }
section() { printf '\n== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }  # seconds since $1
scrape() {  # /metrics of the service, read from inside its container
    "${E[@]}" exec "$ctr" python3 -c 'import urllib.request as u
print(u.urlopen("http://127.0.0.1:9464/metrics", timeout=3).read().decode())' 2>/dev/null
}
metric_sum() {  # metric_sum NAME: the sum of a metric's samples (0 if unreadable)
    { scrape || true; } | awk -v n="$1" '
        index($0, n "{") == 1 || index($0, n " ") == 1 { t += $NF }
        END { printf "%d\n", t }'
}

failures=()
check() {  # check DESCRIPTION COMMAND...: record a pass or a failure
    local what=$1; shift
    if "$@"; then echo "ok: $what"; else echo "FAILED: $what"; failures+=("$what"); fi
}

section "forgejo-scheduler image check"
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit:  $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "engine:  $("$ENGINE" --version) (${E[*]})"
echo "host:    $(uname -srm), $(nproc) cores"

# --- 1. build and size -----------------------------------------------------------------
if ((local_base)) && [[ -z $base ]]; then
    base=localhost/forgejo-scheduler-base
    if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1; then
        section "local base (debootstrap)"
        "$repo/scripts/make-local-base.sh" --engine "$ENGINE" --tag "$base" 2>&1 \
            | grep -v -e '^Copying' -e '^Writing manifest' -e '^Storing signatures'
    fi
fi
if ((build)); then
    section "1. build"
    bargs=(--tag "$tag" --engine "$ENGINE")
    if [[ -n $python ]]; then bargs+=(--python "$python"); fi
    if [[ -n $base ]]; then bargs+=(--base "$base"); fi
    if ((offline)); then bargs+=(--offline); fi
    if ((offline && local_base)); then bargs+=(--no-network); fi
    show "scripts/build-image.sh ${bargs[*]}"
    start=$(now)
    if ! "$repo/scripts/build-image.sh" "${bargs[@]}" >"$work/build.log" 2>&1; then
        tail -30 "$work/build.log"
        die "the build failed (full log: $work/build.log)"
    fi
    build_s=$(since "$start")
    grep -e '^wheels: ' -e '^docker/wheels/' -e '^forgejo-scheduler [0-9]' "$work/build.log" || true
    tail -1 "$work/build.log"
    printf 'build took %.0f s\n' "$build_s"
fi
"$ENGINE" image inspect "$tag" >/dev/null 2>&1 || die "no image $tag (build it, or drop --no-build)"

section "image size"
show "$ENGINE images $tag"
"$ENGINE" images "$tag"
if [[ -n $base ]]; then "$ENGINE" images "$base" | tail -n +2; fi
size_mb=$(( $("$ENGINE" image inspect --format '{{.Size}}' "$tag") / 1000000 ))
show "$ENGINE image inspect (user, entrypoint, cmd, volumes, ports, healthcheck)"
"$ENGINE" image inspect --format \
    'user={{.Config.User}} entrypoint={{json .Config.Entrypoint}} cmd={{json .Config.Cmd}}
volumes={{json .Config.Volumes}} ports={{json .Config.ExposedPorts}} stopsignal={{.Config.StopSignal}}
healthcheck={{json .Config.Healthcheck.Test}}' "$tag"

# --- 2. run against the simulator ------------------------------------------------------
section "2. run against the simulator"
mkdir -p "$work/gen" "$work/etc"
chown 1000:1000 "$work/gen" 2>/dev/null \
    || die "cannot chown to uid 1000 (run as root; rootless podman maps uids differently)"
sim_args=(run -d --name "$sim" --network none "${ENGINE_RLIMITS[@]}" -v "$work/gen:/sim" "$tag"
          sim --listen 127.0.0.1:8080 --instances "a,b" --rate 1 --duration-range "1,3"
          --max-jobs "$jobs" --write-config /sim/config.toml)
show "${E[*]} ${sim_args[*]/$work/\$WORK}"
quiet "${E[@]}" "${sim_args[@]}" >/dev/null
for _ in $(seq 100); do
    "$ENGINE" logs "$sim" 2>&1 | grep -q '^runner config written' && break
    if [[ $("$ENGINE" inspect --format '{{.State.Running}}' "$sim") != true ]]; then
        "$ENGINE" logs "$sim" | tail -20
        die "the simulator exited"
    fi
    sleep 0.1
done
"$ENGINE" logs "$sim" 2>&1 | grep -q '^runner config written' || die "the simulator wrote no config"
"$ENGINE" logs "$sim" 2>&1 | sed -n 1,4p  # reads to the end: head would SIGPIPE the engine (pipefail)

# The generated config, adapted to the image: state on the /data volume, metrics on
# 0.0.0.0:9464 (where the HEALTHCHECK looks), tokens as files in the mounted config
# directory, readable by uid 1000 only.
sed -e 's|^state_dir = .*|state_dir = "/data"|' \
    -e 's|^listen = .*|listen = "0.0.0.0:9464"|' \
    -e 's|^token_file = "/sim/config\.\([A-Za-z0-9_-]*\)\.token"|token_file = "/etc/forgejo-scheduler/\1.token"|' \
    -e 's|^\[runner\]$|[runner]\nshutdown_timeout = "30s"|' \
    "$work/gen/config.toml" >"$work/etc/config.toml"
for name in a b; do
    install -m 0600 "$work/gen/config.$name.token" "$work/etc/$name.token"
done
chown 1000:1000 "$work"/etc/*.token
echo "config mounted at /etc/forgejo-scheduler/config.toml:"
sed 's/^/    /' "$work/etc/config.toml"

run_args=(run -d --name "$ctr" --network "container:$sim" "${ENGINE_RLIMITS[@]}"
          -v "$work/etc:/etc/forgejo-scheduler:ro" -v "$vol:/data" "$tag")
show "${E[*]} ${run_args[*]/$work/\$WORK}"
quiet "${E[@]}" "${run_args[@]}" >/dev/null
started=$(now)

want=$jobs  # half of all jobs finished; arrivals go on, so tasks still run at the stop
finished=0
while :; do
    finished=$(metric_sum forgejo_scheduler_tasks_finished_total)
    [[ ${finished%.*} -ge $want ]] && break
    if [[ $("$ENGINE" inspect --format '{{.State.Running}}' "$ctr") != true ]]; then
        "$ENGINE" logs "$ctr" | tail -20
        die "the container stopped"
    fi
    if (( $(since "$started" | cut -d. -f1) >= 120 )); then
        "$ENGINE" logs "$ctr" | tail -20
        die "fewer than $want tasks finished after 120 s"
    fi
    sleep 0.5
done
echo "after $(since "$started") s: $finished tasks finished"

show "GET http://127.0.0.1:9464/metrics (from inside the container) | grep -E 'tasks_(finished_total|running)|connection_up'"
scrape | grep -E '^forgejo_scheduler_(tasks_finished_total|tasks_running|connection_up)\{' \
    | grep -v ' 0\.0$' || true
echo "(samples that are 0 left out)"
show "${E[*]} exec $ctr id"
uid_line=$("${E[@]}" exec "$ctr" id)
echo "$uid_line"
if [[ $ENGINE == podman ]]; then top_args=(user pid args); else top_args=(-o "user,pid,args"); fi
show "${E[*]} top $ctr ${top_args[*]}"
"${E[@]}" top "$ctr" "${top_args[@]}" | sed -n 1,6p
show "${E[*]} exec $ctr sh -c 'ls -lnd /data; ls -ln /data /data/connections'"
data_ls=$("${E[@]}" exec "$ctr" sh -c 'ls -lnd /data; ls -ln /data /data/connections')
echo "$data_ls"

# --- 3. health -------------------------------------------------------------------------
section "3. healthcheck"
if [[ $ENGINE == podman ]]; then
    show "${E[*]} healthcheck run $ctr"
    if quiet "${E[@]}" healthcheck run "$ctr"; then echo "(exit 0)"; else echo "(exit $?)"; fi
else
    # docker runs the first check one interval (30 s) after the start.
    for _ in $(seq 90); do
        [[ $(docker inspect --format '{{.State.Health.Status}}' "$ctr") == starting ]] || break
        sleep 1
    done
fi
show "$ENGINE inspect --format '{{.State.Health.Status}}' $ctr"
health=$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$ctr")
echo "$health"

# --- 4. SIGTERM ------------------------------------------------------------------------
section "4. stop (SIGTERM)"
# Right after a task starts (it runs >= 1 s), so that the drain has one to wait for.
starts=$("$ENGINE" logs "$ctr" 2>&1 | grep -c ': started$' || true)
for _ in $(seq 300); do
    (( $("$ENGINE" logs "$ctr" 2>&1 | grep -c ': started$' || true) > starts )) && break
    sleep 0.1
done
running=$(metric_sum forgejo_scheduler_tasks_running)
before=$(metric_sum forgejo_scheduler_tasks_finished_total)
echo "tasks running before the stop: $running (finished so far: $before)"
show "time ${E[*]} stop -t 60 $ctr"
start=$(now)
quiet "${E[@]}" stop -t 60 "$ctr" >/dev/null
stop_s=$(since "$start")
printf 'stop returned after %.2f s\n' "$stop_s"
show "$ENGINE inspect --format '{{.State.ExitCode}}' $ctr"
exit_code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$ctr")
echo "$exit_code"
"${E[@]}" logs "$ctr" >"$work/container.log" 2>&1
show "${E[*]} logs $ctr  (the first 3 lines, then everything from the SIGTERM on)"
head -3 "$work/container.log"
echo "    ... $(grep -c ': finished, ' "$work/container.log") lines 'task N on X: finished, ...' in all"
sed -n '/shutting down/,$p' "$work/container.log"
drained=$(sed -n '/shutting down/,$p' "$work/container.log" | grep -c ': finished, success' || true)

quiet "${E[@]}" stop -t 30 "$sim" >/dev/null
"$ENGINE" logs "$sim" >"$work/sim.out" 2>/dev/null
ledger=$(python3 - "$work/sim.out" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
report = json.loads(text[text.index("\n{") + 1:])
led = report["ledger"]
print(" ".join(f"{k}={led[k]}" for k in
               ("assigned", "finished", "outstanding", "lost", "zombie", "duplicate_executions")))
print("results:", json.dumps(led["results"]))
EOF
)
echo "simulator ledger after the stop: $ledger"

# --- summary ---------------------------------------------------------------------------
section "summary"
echo "image:         $tag, $size_mb MB ($ENGINE image inspect .Size)${base:+, BASE=$base}"
echo "tasks:         $before finished before the stop, $running running at the stop, $drained finished during the drain"
echo "user:          $uid_line"
echo "health:        $health"
printf 'SIGTERM:       exit code %s, podman/docker stop returned after %.2f s\n' "$exit_code" "$stop_s"
echo "simulator:     $ledger"
check "tasks finished (>= $want)" test "${before%.*}" -ge "$want"
check "runs as uid 1000" grep -q '^uid=1000' <<<"$uid_line"
check "/data holds the connection state" grep -q 'connections' <<<"$data_ls"
check "healthy" test "$health" = healthy
check "exit code 0 after SIGTERM" test "$exit_code" = 0
check "stopped before the 60 s stop timeout" test "${stop_s%.*}" -lt 60
check "tasks running at the SIGTERM finished in the drain" test "$drained" -ge 1
check "the service logged a complete drain" grep -q 'stopped: every task is finished and reported' "$work/container.log"
check "no task lost or run twice" grep -q 'lost=0 zombie=0 duplicate_executions=0' <<<"$ledger"
if ((${#failures[@]})); then
    echo "${#failures[@]} check(s) failed"
    exit 1
fi
echo "all checks passed"
