#!/usr/bin/env bash
# Build a minimal Debian base image with debootstrap, for machines that cannot pull
# python:3.11-slim-bookworm (no registry access). The result fits the Dockerfile's
# BASE: python3 + venv, CA certificates, tini.
#
#     scripts/make-local-base.sh                  # -> localhost/forgejo-scheduler-base
#     scripts/build-image.sh --base localhost/forgejo-scheduler-base
#
# Needs root and debootstrap (apt-get install debootstrap). The Debian mirror is the
# one this host's apt uses, unless --mirror is given.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/make-local-base.sh [options]

  --tag NAME        image name (default localhost/forgejo-scheduler-base)
  --suite SUITE     Debian suite (default bookworm: Python 3.11)
  --mirror URL      Debian mirror (default: the first one in this host's apt sources)
  --engine ENGINE   docker or podman (default: as scripts/build-image.sh chooses)
  -h, --help        this text
EOF
}

die() { echo "make-local-base.sh: $*" >&2; exit 1; }

tag=localhost/forgejo-scheduler-base
suite=bookworm
mirror=""
engine=""
while (($#)); do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --suite) suite=${2:?--suite needs a value}; shift 2 ;;
        --mirror) mirror=${2:?--mirror needs a value}; shift 2 ;;
        --engine) engine=${2:?--engine needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $(id -u) == 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"

# shellcheck source=scripts/image-engine.sh
. "$(dirname "${BASH_SOURCE[0]}")/image-engine.sh"
engine_select "$engine" || die "no usable container engine"
engine=$ENGINE

if [[ -z $mirror ]]; then
    # deb822 sources ("URIs: ...") or one-line sources ("deb URL suite ...").
    mirror=$(
        { cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}'; } || true
    )
    if [[ -z $mirror ]]; then
        mirror=$(
            { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                | awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}'; } || true
        )
    fi
    [[ -n $mirror ]] || die "no Debian mirror in this host's apt sources: pass --mirror URL"
fi

root=$(mktemp -d /tmp/forgejo-scheduler-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,tini \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; die "debootstrap failed"; }
rm -f "$root.log"

# What the official slim images also leave out: package caches and lists, docs,
# manual pages, translations. apt still works after an `apt-get update`.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/*

echo "importing as $tag with $engine"
tar -C "$root" -c . | "$engine" import - "$tag" >/dev/null
"$engine" image inspect --format '{{.Id}} {{.Size}}' "$tag" \
    | awk -v t="$tag" '{printf "%s: %s, %.0f MB\n", t, substr($1, 1, 19), $2 / 1e6}'
