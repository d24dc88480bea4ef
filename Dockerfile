# forgejo-scheduler container image. Full guide: docs/container.md
#
# Build (scripts/build-image.sh picks docker or podman and passes the flags below):
#
#     docker build -t forgejo-scheduler .
#     scripts/build-image.sh --tag forgejo-scheduler:dev
#
# Build args:
#   BASE     any Debian-like image with python3 >= 3.11 and its venv module
#            (default python:3.11-slim-bookworm). tini is installed if missing.
#            Without access to Docker Hub: scripts/make-local-base.sh builds one
#            with debootstrap, then --build-arg BASE=localhost/forgejo-scheduler-base.
#   VERSION  only a label (org.opencontainers.image.version).
#
# Where the Python packages come from: the wheel of this project is always built
# here, in the `build` stage, from the source in the build context, and installed
# as a wheel into /opt/venv. Its dependencies (and the hatchling build backend)
# come from
#   * the package index, when docker/wheels/ holds no wheels (the normal case);
#   * docker/wheels/ alone (pip --no-index), when it holds wheels: for builds that
#     cannot reach the index, e.g. behind a TLS-intercepting proxy the build does
#     not trust. `scripts/build-image.sh --offline` fills that directory on the
#     host (pip download), builds, and empties it again.
#
# Image layout (fixed; examples/ and deploy/ rely on it):
#   user       uid 1000, gid 1000 (forgejo-scheduler), no root at run time
#   /data      state_dir: a VOLUME owned by 1000:1000 (pending request keys, task
#              work directories). A bind mount must be writable by uid 1000.
#   /etc/forgejo-scheduler/config.toml
#              config; the image ships docker/config.toml there (state_dir "/data",
#              metrics on 0.0.0.0:9464, one placeholder connection): mount yours.
#   9464       /metrics, /healthz, /readyz
#   PID 1      tini (exec-form ENTRYPOINT): SIGTERM reaches the service, which
#              drains (no new tasks, running ones finish within shutdown_timeout)
#              and exits 0; tini also reaps orphans that jobs leave behind.
#
# Jobs with `<label>:host` labels run inside this container as uid 1000 with only
# what BASE has (bash, coreutils, python3): derive an image (FROM forgejo-scheduler,
# install git, node and whatever the jobs need) for real use.

ARG BASE=python:3.11-slim-bookworm

# --- build: the project's wheel, and a venv with it installed --------------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Host-provided wheels for offline builds; usually only the README (see above).
COPY docker/wheels/ /src/wheels/
# Only what the wheel needs (see .dockerignore), so that editing tests or docs does
# not invalidate these layers.
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
# /tmp/tools: a throwaway pip (the base may have none outside a venv). pip and
# setuptools are removed from /opt/venv: not needed at run time.
RUN set -eu; \
    python3 -m venv /tmp/tools; \
    if ls /src/wheels/*.whl >/dev/null 2>&1; then \
        echo "wheels: offline, from docker/wheels/ only"; \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/wheels; \
    else \
        echo "wheels: from the package index"; \
    fi; \
    /tmp/tools/bin/pip wheel --wheel-dir /wheels .; \
    ls /wheels; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-index --find-links /wheels /wheels/forgejo_scheduler-*.whl; \
    /opt/venv/bin/pip uninstall --yes pip setuptools 2>/dev/null || true; \
    /opt/venv/bin/forgejo-scheduler --version

# --- runtime ---------------------------------------------------------------------------
FROM ${BASE}
ARG VERSION=""
LABEL org.opencontainers.image.title="forgejo-scheduler" \
      org.opencontainers.image.description="A Forgejo Actions runner service: many connections, one fair pool of slots" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN set -eux; \
    if ! command -v tini >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends tini; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --gid 1000 forgejo-scheduler; \
    useradd --uid 1000 --gid 1000 --home-dir /data --no-create-home --no-log-init \
        --shell /usr/sbin/nologin forgejo-scheduler; \
    install -d -o 1000 -g 1000 -m 0700 /data; \
    install -d -m 0755 /etc/forgejo-scheduler

# Same BASE in both stages, so the venv's interpreter symlink is valid here too.
COPY --from=build /opt/venv /opt/venv
COPY docker/config.toml /etc/forgejo-scheduler/config.toml

USER 1000:1000
WORKDIR /data
# Declared after the chown above: a fresh named volume starts owned by uid 1000.
VOLUME ["/data"]

EXPOSE 9464
STOPSIGNAL SIGTERM
# Liveness only (/healthz): an unreachable Forgejo shows in connection_up, it must not
# mark the container unhealthy. Python, because slim images have no curl. Needs the
# metrics endpoint on 0.0.0.0:9464 or 127.0.0.1:9464. (podman keeps HEALTHCHECK only
# in the docker image format: build-image.sh passes --format docker.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9464/healthz', timeout=3).status == 200 else 1)"]

# Exec form: tini is PID 1 and signals reach the service (a shell-form entrypoint
# swallows SIGTERM: the engine kills it after its stop timeout, exit 137).
ENTRYPOINT ["tini", "--", "forgejo-scheduler"]
CMD ["run", "--config", "/etc/forgejo-scheduler/config.toml"]
