#!/usr/bin/env bash
# The test command: installs the system tools the tests use when they are missing (Debian,
# as root), then runs every test. Usage: bash tests/run.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nc >/dev/null || missing+=(netcat-openbsd)
command -v curl >/dev/null || missing+=(curl)
# `ip` for the tests that make their own network namespace.
command -v ip >/dev/null || missing+=(iproute2)
# A real Alertmanager for tests/alertmanager_e2e.rs.
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
# A real Prometheus (remote-write receiver, scraper) and promtool (tests/exposition_e2e.rs).
command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v promtool >/dev/null || [ -x /usr/bin/promtool ] || missing+=(prometheus)
# A real node exporter beside the host metrics (tests/host_e2e.rs).
[ -x /usr/bin/prometheus-node-exporter ] || missing+=(prometheus-node-exporter)
# Headless Chromium loads the status page (tests/status_page_e2e.rs).
command -v chromium >/dev/null || missing+=(chromium)
# A real MQTT broker and its password tool (tests/gps_mqtt_e2e.rs).
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || missing+=(mosquitto)

# The distribution's packages start daemons on the default ports (Prometheus 9090, which is
# tallyd's default HTTP port, Alertmanager 9093, node exporter 9100, mosquitto 1883). The tests run their own
# instances on port 0 and need none of them: stop and disable them, with systemd or without
# it (no systemd as PID 1: the packages' init scripts start them with start-stop-daemon and a
# pidfile). Nothing running is fine.
distro_services=(prometheus prometheus-node-exporter prometheus-alertmanager mosquitto)
stop_distro_services() {
  [ "$(id -u)" = 0 ] || return 0
  local svc pidfile pid exe
  for svc in "${distro_services[@]}"; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
      systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$svc" ]; then
      if command -v service >/dev/null; then
        service "$svc" stop >/dev/null 2>&1 || true
      else
        "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
      fi
      if command -v update-rc.d >/dev/null; then
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
      fi
    fi
    # Whatever is still running from the package's own pidfile, if it is that daemon.
    for pidfile in "/run/$svc/$svc.pid" "/run/prometheus/$svc.pid" "/run/$svc.pid"; do
      [ -r "$pidfile" ] || continue
      pid="$(cat "$pidfile" 2>/dev/null || true)"
      case "$pid" in '' | *[!0-9]*) continue ;; esac
      exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
      if [ "$exe" = "/usr/bin/$svc" ] || [ "$exe" = "/usr/sbin/$svc" ]; then
        kill "$pid" 2>/dev/null || true
      fi
    done
  done
}

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Keep the packages' daemons from starting at all while installing (invoke-rc.d and
    # deb-systemd-invoke ask policy-rc.d; 101 = action forbidden), unless a policy exists.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
stop_distro_services

# The systemd unit: directives and its systemd-analyze security score (no systemd needed).
bash tests/systemd.sh
cargo test "$@"
