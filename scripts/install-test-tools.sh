#!/bin/sh
# Install the system tools some tests need: Debian's prometheus package, which provides
# `prometheus` and `promtool` (tests/test_prometheus.py, tests/test_prometheus_live.py).
# Quiet; a no-op when both are already on PATH. Without root or apt-get it prints one
# line and exits 0: those tests then skip and name this script.
set -eu
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-tools: not root or no apt-get; install prometheus (prometheus + promtool) yourself, or the Prometheus tests skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's postinst would start a server on :9090; a policy-rc.d that denies
# service starts keeps it from doing so during this install (our tests use their own
# ports). An existing policy-rc.d is left alone.
policy=/usr/sbin/policy-rc.d
own_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
fi
trap '[ -z "$own_policy" ] || rm -f "$policy"' EXIT
install() { apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }
if ! install && ! { apt-get update -qq >/dev/null 2>&1 && install; }; then
    # No package index or mirror reachable: the tests that need it skip (and say why)
    # rather than the whole run failing here.
    echo "install-test-tools: apt-get could not install prometheus; the Prometheus tests will skip" >&2
    exit 0
fi
# If a service manager started it anyway, stop it so nothing is left listening on :9090.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus >/dev/null 2>&1 || true
    systemctl disable prometheus >/dev/null 2>&1 || true
fi
echo "install-test-tools: $(prometheus --version 2>&1 | head -n 1)" >&2
