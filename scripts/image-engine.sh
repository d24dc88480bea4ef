# shellcheck shell=bash disable=SC2034  # sets globals for the scripts that source it
# Sourced by scripts/build-image.sh, check-image.sh and make-local-base.sh: which
# container engine to use, and the flags podman needs where it runs without systemd
# and without CAP_SYS_RESOURCE (docs/container.md, "Building with podman").
#
# engine_select [ENGINE] sets
#   ENGINE            docker or podman
#   ENGINE_CMD        the command with its global flags, e.g. (podman --runtime runc ...)
#   ENGINE_RLIMITS    --ulimit flags for `build` and `run` (empty for docker)

engine_select() {
    local wanted=${1:-}
    if [[ -z $wanted ]]; then
        if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
            wanted=docker
        elif command -v podman >/dev/null; then
            wanted=podman
        elif command -v docker >/dev/null; then
            echo "docker is installed but its daemon does not answer (docker info failed), and podman is not installed" >&2
            return 1
        else
            echo "neither docker nor podman is installed" >&2
            return 1
        fi
    fi
    case "$wanted" in
        docker|podman) ;;
        *) echo "the engine must be docker or podman, not '$wanted'" >&2; return 1 ;;
    esac
    command -v "$wanted" >/dev/null || { echo "$wanted is not installed" >&2; return 1; }

    ENGINE=$wanted
    ENGINE_CMD=("$wanted")
    ENGINE_RLIMITS=()
    if [[ $wanted == podman ]]; then
        local runtime=${PODMAN_RUNTIME:-} nofile
        if [[ -z $runtime ]] && command -v runc >/dev/null; then
            runtime=runc
        fi
        if [[ -n $runtime && $runtime != default ]]; then
            # crun fails on hosts with cgroups in hybrid mode; runc with cgroupfs works
            # there and wherever there is no systemd.
            ENGINE_CMD+=(--runtime "$runtime" --cgroup-manager cgroupfs)
        fi
        # Without CAP_SYS_RESOURCE podman's default rlimits cannot be set: ask for what
        # this shell may grant (nofile up to its hard limit, nproc capped).
        nofile=$(ulimit -Hn)
        if [[ $nofile == unlimited ]] || ((nofile > 1048576)); then nofile=1048576; fi
        ENGINE_RLIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096)
    fi
}
