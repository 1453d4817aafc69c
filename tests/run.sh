#!/usr/bin/env bash
# The test command: installs the system tools the tests use when they are missing (Debian,
# as root), then runs every test. Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nc >/dev/null || missing+=(netcat-openbsd)
command -v curl >/dev/null || missing+=(curl)
# ip netns + veth for the non-loopback admin test in tests/security_e2e.rs (run as root).
command -v ip >/dev/null || missing+=(iproute2)
# A real Alertmanager for tests/alertmanager_e2e.rs.
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
# A real Prometheus (remote-write receiver) for tests/remote_write_e2e.rs.
command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi

cargo test "$@"
