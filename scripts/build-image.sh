#!/usr/bin/env bash
# Build the forgejo-scheduler container image with docker or podman, whichever is
# usable: docker when its daemon answers, else podman. See docs/container.md.
#
#     scripts/build-image.sh                                  # forgejo-scheduler:latest
#     scripts/build-image.sh --tag forgejo-scheduler:dev --base python:3.12-slim-bookworm
#     scripts/build-image.sh --offline --base localhost/forgejo-scheduler-base
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/build-image.sh [options] [-- extra build arguments]

  --tag NAME        image name (default forgejo-scheduler:latest)
  --base IMAGE      BASE build arg: a Debian-like image with python3 >= 3.11 and venv
                    (default python:3.11-slim-bookworm)
  --engine ENGINE   docker or podman (default: docker if its daemon answers, else podman)
  --offline         download the dependency wheels on this host (pip download) into
                    docker/wheels/ and build with pip --no-index: for builds that
                    cannot reach the package index. docker/wheels/ is emptied after.
  --python PATH     the Python whose pip downloads the wheels (default: .venv/bin/python
                    of this checkout if it exists, else python3)
  --no-network      build without network (--network none): with --offline and a BASE
                    that has tini. podman otherwise sets up its bridge for RUN steps
                    (NAT rules, net.ipv4.ip_forward=1) and leaves them behind
  -h, --help        this text

Environment:
  WHEEL_PYTHON_VERSIONS  Python versions to download binary wheels for with --offline
                         (default "3.11 3.12 3.13"; the base's Python must be one)
  PODMAN_RUNTIME         OCI runtime for podman (default: runc if installed, which also
                         selects the cgroupfs cgroup manager; "default" for podman's own)
EOF
}

die() { echo "build-image.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tag=forgejo-scheduler:latest
base=""
engine=""
offline=0
network=1
python=""
extra=()
while (($#)); do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --base) base=${2:?--base needs a value}; shift 2 ;;
        --engine) engine=${2:?--engine needs a value}; shift 2 ;;
        --offline) offline=1; shift ;;
        --python) python=${2:?--python needs a value}; shift 2 ;;
        --no-network) network=0; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# --- engine ----------------------------------------------------------------------------
# shellcheck source=scripts/image-engine.sh
. "$repo/scripts/image-engine.sh"
engine_select "$engine" || die "no usable container engine"
# podman drops HEALTHCHECK from images in the OCI format.
build_flags=("${ENGINE_RLIMITS[@]}")
if [[ $ENGINE == podman ]]; then build_flags+=(--format docker); fi
if ((!network)); then build_flags+=(--network none); fi

# --- wheels for --offline --------------------------------------------------------------
wheels="$repo/docker/wheels"
shopt -s nullglob
stale=("$wheels"/*.whl)
shopt -u nullglob
if ((${#stale[@]})); then
    if ((offline)); then
        rm -f "${stale[@]}"
    else
        die "docker/wheels/ holds ${#stale[@]} wheel(s) from an earlier --offline build; the build would use them alone. Remove them (rm docker/wheels/*.whl) or pass --offline"
    fi
fi

if ((offline)); then
    if [[ -z $python ]]; then
        if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
    fi
    command -v "$python" >/dev/null || die "no Python at '$python' (--python PATH)"
    trap 'rm -f "$wheels"/*.whl' EXIT
    # The project's dependencies and its build backend, read from pyproject.toml.
    mapfile -t reqs < <("$python" - "$repo/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    data = tomllib.load(f)
for req in data["build-system"]["requires"] + data["project"]["dependencies"]:
    print(req)
EOF
    )
    arch=$(uname -m)
    echo "downloading wheels for ${reqs[*]} (linux $arch; Python ${WHEEL_PYTHON_VERSIONS:-3.11 3.12 3.13})"
    for pyver in ${WHEEL_PYTHON_VERSIONS:-3.11 3.12 3.13}; do
        "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --python-version "$pyver" --platform "manylinux2014_$arch" \
            --platform "manylinux_2_17_$arch" --platform "manylinux_2_28_$arch" \
            --dest "$wheels" "${reqs[@]}" \
            || die "pip download failed for Python $pyver (is the package index reachable from this host?)"
    done
    shopt -s nullglob
    got=("$wheels"/*.whl)
    shopt -u nullglob
    echo "docker/wheels/: ${#got[@]} wheels"
fi

# --- build -----------------------------------------------------------------------------
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/scheduler/__init__.py")
args=(build "${build_flags[@]}" --tag "$tag" --build-arg "VERSION=$version")
[[ -n $base ]] && args+=(--build-arg "BASE=$base")
args+=(--file "$repo/Dockerfile" "${extra[@]}" "$repo")

echo "+ ${ENGINE_CMD[*]} ${args[*]}"
"${ENGINE_CMD[@]}" "${args[@]}" || die "$ENGINE build failed"

size=$("$ENGINE" image inspect --format '{{.Size}}' "$tag")
echo "built $tag with $ENGINE (version ${version:-?}, $((size / 1000000)) MB)"
