#!/usr/bin/env bash
# Packaging checks (.ci/run calls this after the smoke test, which built the release binary):
#   container  podman builds packaging/Containerfile.local (FROM scratch: the release binary and
#              the libraries ldd lists; its runtime lines are packaging/Dockerfile's, compared
#              here), the image is created and exported, its entrypoint runs under chroot as
#              the image's user, serves /health/ready and counts StatsD sent over UDP and over
#              the Unix socket; the image's HEALTHCHECK passes while it runs and fails after
#              SIGTERM. (`podman run` is refused on this machine: see docs/operations.md.)
#   deb        cargo deb builds the .deb, dpkg -i installs it, the installed `tallyd
#              check-config` passes as root and as the package's user, `systemd-analyze verify`
#              checks the installed unit, dpkg -r and dpkg -P leave nothing behind; lintian's
#              findings are printed (not fatal).
#   rules      promtool check rules + promtool test rules on packaging/prometheus/.
# Usage: bash tests/packaging.sh [container|deb|rules ...]   (default: all three)
# PKG_PROFILE=dev uses target/debug/tallyd instead of a release build (for development);
# PKG_BIN=path runs the container part with that binary instead.
# Installs what it needs from Debian when missing (as root). Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$PWD"

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(container deb rules)
profile="${PKG_PROFILE:-release}"
case "$profile" in
  release) bin="$root_dir/target/release/tallyd" ;;
  dev) bin="$root_dir/target/debug/tallyd" ;;
  *) echo "packaging: PKG_PROFILE must be release or dev" >&2; exit 2 ;;
esac
if [ -n "${PKG_BIN:-}" ]; then bin="$PKG_BIN"; profile=given; fi

passed=0
failed=0
log="$(mktemp)"
work="$(mktemp -d)"
pid=""
mounted=()
installed=""
cleanup() {
  if [ -n "$installed" ]; then dpkg -P tallyd >/dev/null 2>&1 || true; fi
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  local m
  for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
  # Never delete through a mount point that is still mounted.
  if ! grep -qF " $work/" /proc/mounts; then rm -rf "$work"; fi
  rm -f "$log"
}
trap cleanup EXIT

fail() {
  echo "packaging: FAIL: $*"
  if [ -s "$log" ]; then echo "--- log"; tail -n 60 "$log"; fi
  failed=$((failed + 1))
  echo "packaging: $passed passed, $failed failed"
  exit 1
}
ok() { echo "packaging: ok: $*"; passed=$((passed + 1)); }

need_apt=()
want_tool() { command -v "$1" >/dev/null || need_apt+=("$2"); }
for part in "${parts[@]}"; do
  case "$part" in
    container) want_tool podman podman; want_tool curl curl; want_tool nc netcat-openbsd ;;
    deb) want_tool lintian lintian; want_tool systemd-analyze systemd; want_tool dpkg-deb dpkg ;;
    rules) want_tool promtool prometheus ;;
    *) echo "packaging: unknown part $part" >&2; exit 2 ;;
  esac
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # No daemon of these packages may start while installing (policy-rc.d: 101 = forbidden).
    policy=/usr/sbin/policy-rc.d
    made_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f "$policy"
  else
    echo "packaging: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

build_binary() {
  if [ "$profile" = release ]; then
    # A no-op when the smoke test has built it already.
    cargo build --release --quiet --bin tallyd
  fi
  [ -x "$bin" ] || fail "no binary at $bin"
}

# Waits (at most 30 s) for "tallyd started" in $log while $pid lives.
wait_started() {
  local _
  for _ in $(seq 1 300); do
    grep -q 'tallyd started' "$log" && return 0
    kill -0 "$pid" 2>/dev/null || fail "tallyd exited at start"
    sleep 0.1
  done
  fail "tallyd did not start within 30 s"
}
# The address component $1 logged it listens on.
bound() { sed -n 's/.*"component":"'"$1"'","addr":"\([^"]*\)".*/\1/p' "$log" | head -n 1; }
# Waits (at most 20 s) for $pid to exit; its status in $exit_status.
wait_exit() {
  local _
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "tallyd did not stop within 20 s of SIGTERM"
  exit_status=0
  wait "$pid" || exit_status=$?
  pid=""
}

# ---------------------------------------------------------------------------------------------
container() {
  build_binary
  # 1. The local Containerfile's runtime lines are the Dockerfile's (after the "# runtime:" line).
  runtime_lines() { sed -n '/^# runtime:/,$p' "$1" | tail -n +2; }
  diff <(runtime_lines packaging/Dockerfile) <(runtime_lines packaging/Containerfile.local) \
    || fail "packaging/Containerfile.local's runtime lines differ from packaging/Dockerfile's"
  ok "Containerfile.local's runtime stage is the Dockerfile's"

  # 2. The build context: what the Dockerfile's build stage makes (src/, out/) and what the
  # distroless base provides (base/: the ldd libraries, passwd, group, /tmp).
  local ctx="$work/ctx"
  mkdir -p "$ctx/src/target/release" "$ctx/src/config" "$ctx/out/state/queue" "$ctx/out/run" \
    "$ctx/base/etc" "$ctx/base/tmp"
  cp "$bin" "$ctx/src/target/release/tallyd"
  cp config/tallyd.toml "$ctx/src/config/tallyd.toml"
  chmod 1777 "$ctx/base/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$ctx/base/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/base/etc/group"
  local lib
  while read -r lib; do
    [ -n "$lib" ] || continue
    # The path as ldd names it (the loader's /lib64/... included), and the file it resolves to.
    mkdir -p "$ctx/base$(dirname "$lib")"
    cp -L "$lib" "$ctx/base$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  cp packaging/Containerfile.local "$ctx/Containerfile"

  local image=localhost/tallyd:packaging-ci
  # The build stage stays in podman's storage as an untagged image: remember what was there.
  podman images -a -q --no-trunc | sort >"$work/images-before"
  podman build --quiet --format docker -t "$image" "$ctx" >"$log" 2>&1 || fail "podman build"
  ok "podman built $image from packaging/Containerfile.local"

  # 3. The image's recorded settings are the Dockerfile's.
  local cfg
  cfg="$(podman image inspect --format '{{json .Config}}' "$image")"
  local want
  for want in '"User":"65532:65532"' '"8125/udp":{}' '"8125/tcp":{}' '"9090/tcp":{}' \
    '"5000/tcp":{}' '"4317/tcp":{}' '"4318/tcp":{}' '"/var/lib/tallyd":{}' \
    '"StopSignal":"SIGTERM"' '"Entrypoint":["/usr/bin/tallyd"]' \
    '"Cmd":["--config","/etc/tallyd/tallyd.toml"]'; do
    grep -qF "$want" <<<"$cfg" || fail "image config lacks $want: $cfg"
  done
  local health
  health="$(podman image inspect --format '{{json .HealthCheck.Test}}' "$image")"
  [ "$health" = '["CMD","/usr/bin/tallyd","--config","/etc/tallyd/tallyd.toml","health","--live"]' ] \
    || fail "image health check is $health"
  ok "image records user 65532, the six ports, the volume, SIGTERM, entrypoint, cmd, health check"

  # 4. Export the image's filesystem as a container would see it.
  local cid rootfs="$work/rootfs"
  cid="$(podman create --no-healthcheck "$image")"
  mkdir -p "$rootfs"
  podman export "$cid" | tar -x -C "$rootfs"
  podman rm "$cid" >/dev/null
  podman rmi "$image" >/dev/null
  local stage
  for stage in $(podman images -a -q --no-trunc | sort | comm -13 "$work/images-before" -); do
    podman rmi -f "$stage" >/dev/null 2>&1 || true
  done
  [ "$(stat -c %u:%g "$rootfs/var/lib/tallyd/queue")" = 65532:65532 ] \
    || fail "/var/lib/tallyd/queue is not owned by 65532 in the image"
  [ "$(stat -c %u:%g "$rootfs/run/tallyd")" = 65532:65532 ] \
    || fail "/run/tallyd is not owned by 65532 in the image"
  ok "exported the image; the volume and socket directories belong to the runtime user"

  # 5. Run the entrypoint and command under chroot as the image's user, as `docker run -e ...`
  # would: the listeners on loopback port 0 (nothing on this machine can collide with them),
  # the Unix socket in /run/tallyd as in packaging/docker-compose.yml, JSON logs to read the
  # ports from. /proc is mounted as a runtime would.
  mkdir -p "$rootfs/proc"
  mount -t proc proc "$rootfs/proc" || fail "mount proc in the exported root"
  mounted+=("$rootfs/proc")
  local env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    TALLYD_LOG__FORMAT=json TALLYD_STATSD__UDP_LISTEN=127.0.0.1:0
    TALLYD_STATSD__TCP_LISTEN=127.0.0.1:0 TALLYD_HTTP__LISTEN=127.0.0.1:0
    TALLYD_GPS__LISTEN=127.0.0.1:0 TALLYD_OTLP__HTTP_LISTEN=127.0.0.1:0
    TALLYD_OTLP__GRPC_LISTEN=127.0.0.1:0 TALLYD_STATSD__UNIX_SOCKET=/run/tallyd/dsd.socket
    TALLYD_AGGREGATE__FLUSH_INTERVAL=200ms)
  # The volume is writable by the image's user: check-config probes queue.directory when a
  # queue is in use (a Datadog key makes one).
  env -i "${env[@]}" DD_API_KEY=0123456789abcdef0123456789abcdef \
    chroot --userspec=65532:65532 "$rootfs" /usr/bin/tallyd --config /etc/tallyd/tallyd.toml \
    check-config >"$log" 2>&1 || fail "check-config as 65532 in the image"
  ok "check-config in the image as 65532 (queue directory writable)"

  env -i "${env[@]}" chroot --userspec=65532:65532 "$rootfs" \
    /usr/bin/tallyd --config /etc/tallyd/tallyd.toml >"$log" 2>&1 &
  pid=$!
  wait_started
  local http udp
  http="$(bound http)"
  udp="$(bound statsd_udp)"
  [ -n "$http" ] && [ -n "$udp" ] || fail "listening addresses missing from the log"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$http/health/ready")" = 200 ] \
    || fail "/health/ready is not 200"
  ok "the image's entrypoint serves /health/ready (200) as 65532"

  [ -S "$rootfs/run/tallyd/dsd.socket" ] || fail "no Unix socket at /run/tallyd/dsd.socket"
  echo "pkg.sent:1|c|#via:udp" | nc -u -w1 "${udp%:*}" "${udp##*:}"
  echo "pkg.sent:1|c|#via:unix" | nc -U -u -w1 "$rootfs/run/tallyd/dsd.socket"
  local metrics="" _
  for _ in $(seq 1 100); do
    metrics="$(curl -s "http://$http/metrics")"
    grep -qx 'pkg_sent_total{via="udp"} 1' <<<"$metrics" \
      && grep -qx 'pkg_sent_total{via="unix"} 1' <<<"$metrics" && break
    sleep 0.1
  done
  grep -qx 'pkg_sent_total{via="udp"} 1' <<<"$metrics" || fail "UDP line not counted"
  grep -qx 'pkg_sent_total{via="unix"} 1' <<<"$metrics" || fail "Unix socket line not counted"
  ok "StatsD over UDP and over the socket in /run/tallyd counted"

  # The image's HEALTHCHECK command, pointed at the bound port (the image's default listen
  # address is 0.0.0.0:9090; the test moved it to port 0).
  local hc=(/usr/bin/tallyd --config /etc/tallyd/tallyd.toml health --live)
  local has_health=""
  if env -i "${env[@]}" chroot --userspec=65532:65532 "$rootfs" "${hc[@]}" --help >/dev/null 2>&1; then
    has_health=1
    env -i "${env[@]}" TALLYD_HTTP__LISTEN="$http" chroot --userspec=65532:65532 "$rootfs" \
      "${hc[@]}" >>"$log" 2>&1 || fail "the image's HEALTHCHECK failed while tallyd is ready"
    ok "the image's HEALTHCHECK (tallyd health) passes while tallyd runs"
  else
    echo "packaging: note: this binary has no 'tallyd health' yet; HEALTHCHECK not run"
  fi

  kill -TERM "$pid"
  wait_exit
  [ "$exit_status" = 0 ] || fail "tallyd exited $exit_status on SIGTERM"
  [ ! -e "$rootfs/run/tallyd/dsd.socket" ] || fail "socket left behind after SIGTERM"
  if [ -n "$has_health" ]; then
    if env -i "${env[@]}" TALLYD_HTTP__LISTEN="$http" chroot --userspec=65532:65532 "$rootfs" \
      "${hc[@]}" >>"$log" 2>&1; then
      fail "the image's HEALTHCHECK passed with tallyd stopped"
    fi
    ok "the HEALTHCHECK fails once tallyd has stopped"
  fi
  ok "SIGTERM (the image's STOPSIGNAL) stops it with status 0 and removes the socket"
  umount "$rootfs/proc" || fail "umount $rootfs/proc"
  mounted=()
  rm -rf "$rootfs" "$ctx"
}

# ---------------------------------------------------------------------------------------------
deb() {
  build_binary
  if ! command -v cargo-deb >/dev/null; then
    # Not packaged by Debian; about a minute to build on two cores. The version this was tried
    # with: a newer one may want a newer toolchain.
    cargo install cargo-deb --locked --quiet --version 3.8.0
  fi
  dpkg -s tallyd >/dev/null 2>&1 && fail "a tallyd package is installed already; remove it first"
  local out="$work/deb" args=(--no-build --output "$work/deb" --fast)
  case "$profile" in
    dev) args+=(--profile dev --strip) ;;
    given) fail "PKG_BIN is for the container part; cargo deb packages target/" ;;
  esac
  cargo deb "${args[@]}" >"$log" 2>&1 || fail "cargo deb"
  local debfile
  debfile="$(ls "$out"/tallyd_*.deb)"
  ok "cargo deb built $(basename "$debfile")"

  echo "--- lintian $(basename "$debfile") (findings are reported, not fatal; see docs/operations.md)"
  lintian --tag-display-limit 0 "$debfile" 2>&1 || true
  echo "---"

  # No daemon start during the install: without systemd as PID 1 nothing would start anyway.
  installed=1
  dpkg -i "$debfile" >"$log" 2>&1 || fail "dpkg -i"
  ok "dpkg -i"
  [ -x /usr/bin/tallyd ] || fail "/usr/bin/tallyd missing"
  getent passwd tallyd >/dev/null || fail "no tallyd system user"
  [ "$(stat -c %U:%G /var/lib/tallyd)" = tallyd:tallyd ] || fail "/var/lib/tallyd not owned by tallyd"
  grep -qx /etc/tallyd/tallyd.toml /var/lib/dpkg/info/tallyd.conffiles || fail "tallyd.toml is no conffile"
  grep -qx /etc/default/tallyd /var/lib/dpkg/info/tallyd.conffiles || fail "/etc/default/tallyd is no conffile"
  # What the package put on the machine: its files and the maintainer scripts' state directory.
  dpkg -L tallyd >"$work/files"
  ok "installed: /usr/bin/tallyd, user tallyd, /var/lib/tallyd (tallyd:tallyd), two conffiles"

  /usr/bin/tallyd check-config --config /etc/tallyd/tallyd.toml >"$log" 2>&1 \
    || fail "installed check-config as root"
  # As the unit's ExecStartPre runs it: the package's user, with a queue in use.
  runuser -u tallyd -- env -i PATH=/usr/bin:/bin DD_API_KEY=0123456789abcdef0123456789abcdef \
    /usr/bin/tallyd check-config --config /etc/tallyd/tallyd.toml \
    >"$log" 2>&1 || fail "installed check-config as tallyd (queue directory writable)"
  ok "installed tallyd check-config passes as root and as tallyd"

  local unit
  unit="$(dpkg -L tallyd | grep '/systemd/system/tallyd.service$')" || fail "no unit in the package"
  systemd-analyze verify "$unit" >"$log" 2>&1 || fail "systemd-analyze verify $unit"
  if [ -s "$log" ]; then echo "--- systemd-analyze verify said:"; cat "$log"; fi
  ok "systemd-analyze verify $unit"

  dpkg -r tallyd >"$log" 2>&1 || fail "dpkg -r"
  [ ! -e /usr/bin/tallyd ] || fail "/usr/bin/tallyd left after dpkg -r"
  [ -e /etc/tallyd/tallyd.toml ] || fail "the conffile must stay after dpkg -r"
  ok "dpkg -r removed the binary and kept the conffiles"
  dpkg -P tallyd >"$log" 2>&1 || fail "dpkg -P"
  dpkg -s tallyd >/dev/null 2>&1 && fail "tallyd still known to dpkg after purge"
  installed=""
  # Every path the package listed that is not a directory other packages share is gone, and no
  # path named after tallyd is left under /etc, /usr, /var or /run (the state directory, the
  # unit's enablement symlinks and deb-systemd-helper's state included).
  local left="" path
  while read -r path; do
    [ -e "$path" ] || continue
    [ -d "$path" ] && [ -n "$(dpkg -S "$path" 2>/dev/null)" ] && continue
    left+="$path "
  done <"$work/files"
  left+="$(find /etc /usr /var /run -xdev -path /var/lib/containers -prune -o -name '*tallyd*' \
    -print 2>/dev/null | tr '\n' ' ')"
  [ -z "${left// /}" ] || fail "left behind after dpkg -P: $left"
  ok "dpkg -P left no file behind (the system user tallyd stays, as Debian policy asks)"
  userdel tallyd 2>/dev/null || true
  groupdel tallyd 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
rules() {
  promtool check rules packaging/prometheus/tallyd-rules.yml >"$log" 2>&1 \
    || fail "promtool check rules"
  ok "promtool check rules packaging/prometheus/tallyd-rules.yml"
  (cd packaging/prometheus && promtool test rules tallyd-rules.test.yml) >"$log" 2>&1 \
    || fail "promtool test rules"
  ok "promtool test rules packaging/prometheus/tallyd-rules.test.yml"
}

for part in "${parts[@]}"; do
  echo "== packaging: $part"
  "$part"
done
echo "packaging: $passed passed, $failed failed"
