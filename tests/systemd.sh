#!/usr/bin/env bash
# The systemd unit, checked without systemd running: `systemd-analyze security --offline=yes`
# must score it at most 2.0 (--threshold counts tenths) ("OK"; the score docs/operations.md records), and the directives
# the notify protocol and the reload depend on must be there. `systemd-analyze verify` on the
# unit as the .deb installs it (the binary at /usr/bin/tallyd) is tests/packaging.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=systemd/tallyd.service

if ! command -v systemd-analyze >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
  else
    echo "tests/systemd.sh: please install systemd (for systemd-analyze)" >&2
    exit 1
  fi
fi

for want in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'StateDirectory=tallyd' 'LimitNOFILE=' 'ProtectSystem=strict' 'SystemCallFilter=@system-service' \
  'MemoryDenyWriteExecute=yes' 'CapabilityBoundingSet=CAP_NET_ADMIN'; do
  grep -qF -- "$want" "$unit" || { echo "tests/systemd.sh: $unit lacks $want" >&2; exit 1; }
done

out="$(systemd-analyze security --offline=yes --threshold=20 "$unit" 2>&1)" || {
  echo "$out" >&2
  echo "tests/systemd.sh: $unit scores above 2.0 (systemd-analyze security --offline=yes)" >&2
  exit 1
}
echo "$out" | grep "Overall exposure level"
