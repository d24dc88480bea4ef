# forgejo-scheduler container image.
#
# NOT BUILT on the development machine: it runs no Docker engine (a client only, no
# daemon). The layout follows the recipe that was built and run with podman in
# shared/reference/python-stack.md §7.2 (tini as PID 1, SIGTERM drained in <1 s,
# healthy HEALTHCHECK, uid 10001). Build it before relying on it:
#
#     docker build -t forgejo-scheduler .
#     # no registry access? build from a local base (see python-stack.md §7.3):
#     docker build --build-arg BASE=localhost/base -t forgejo-scheduler .
#
# Run it with the config mounted read-only and a volume for the state:
#
#     docker run -d --name forgejo-scheduler \
#       -v /srv/forgejo-scheduler/config.toml:/etc/forgejo-scheduler/config.toml:ro \
#       -v forgejo-scheduler-state:/var/lib/forgejo-scheduler \
#       -e FORGEJO_TOKEN_CODEBERG=... -p 127.0.0.1:9464:9464 forgejo-scheduler
#
# In that config.toml:
#   [runner]  state_dir = "/var/lib/forgejo-scheduler"  (the default "state" would sit
#             next to the config in /etc, which this user cannot write)
#   [metrics] listen = "0.0.0.0:9464"  (the default 127.0.0.1 is the container's own
#             loopback: Prometheus could not scrape it and `-p` could not publish it;
#             the HEALTHCHECK below still reaches 0.0.0.0 through 127.0.0.1)
#
# Jobs with `<label>:host` labels run inside this container as uid 10001: derive an
# image (FROM forgejo-scheduler, install git and whatever the jobs need) for real use.

# Any Debian-like image with python3 (>= 3.11) and python3-venv works; tini is
# installed if it is missing.
ARG BASE=python:3.11-slim-bookworm

# --- build: install the project from its own source into /opt/venv -------------------
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel needs (see .dockerignore), so that editing tests or docs does
# not invalidate this layer.
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/forgejo-scheduler --help >/dev/null

# --- runtime -------------------------------------------------------------------------
FROM ${BASE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

# tini as PID 1: forwards SIGTERM to the service and reaps the orphaned grandchildren
# that job processes leave behind (Python as PID 1 would do the first, not the second).
RUN set -eux; \
    if ! command -v tini >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends tini; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 forgejo-scheduler; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/forgejo-scheduler \
        --no-create-home --shell /usr/sbin/nologin forgejo-scheduler; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/forgejo-scheduler; \
    install -d -m 0755 /etc/forgejo-scheduler

# Same BASE in both stages, so the venv's interpreter path is valid here too.
COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/forgejo-scheduler
# Declared after the chown above: a fresh named volume starts owned by uid 10001.
VOLUME ["/var/lib/forgejo-scheduler"]

# /metrics, /healthz, /readyz. Needs `[metrics] listen = "0.0.0.0:9464"` (see top).
EXPOSE 9464
STOPSIGNAL SIGTERM
# Liveness only (/healthz): an unreachable Forgejo shows in connection_up, it must
# not mark the container unhealthy. Python, because slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=3).status == 200 else 1)"]

# Exec form: tini is PID 1 and signals reach the service (a shell-form entrypoint
# swallowed SIGTERM in the podman test: killed after the timeout, exit 137).
ENTRYPOINT ["tini", "--", "forgejo-scheduler"]
CMD ["run", "--config", "/etc/forgejo-scheduler/config.toml"]
