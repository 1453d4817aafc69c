#!/usr/bin/env bash
# Smoke test: does what the README shows, with nc and curl against the release binary on its
# embedded defaults, except the listen ports: every listener binds 127.0.0.1:0 (set through
# TALLYD_* variables) and the ports are read from tallyd's "listening" log lines, so a service
# already on 8125, 9090, 5000 or 4317/4318 (after `apt-get install prometheus`, the
# distribution's Prometheus takes 9090) cannot break it. Bounded: gives up after 60 s.
# SMOKE_BIN=path runs that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in nc curl; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is missing (apt-get install netcat-openbsd curl)"; exit 1; }
done

bin="${SMOKE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --quiet
  bin=./target/release/tallyd
fi
sock="$(mktemp -d)/dsd.socket"
log="$(mktemp)"
TALLYD_STATSD__UNIX_SOCKET="$sock" \
  TALLYD_STATSD__UDP_LISTEN=127.0.0.1:0 TALLYD_STATSD__TCP_LISTEN=127.0.0.1:0 \
  TALLYD_HTTP__LISTEN=127.0.0.1:0 TALLYD_GPS__LISTEN=127.0.0.1:0 \
  TALLYD_OTLP__HTTP_LISTEN=127.0.0.1:0 TALLYD_OTLP__GRPC_LISTEN=127.0.0.1:0 \
  "$bin" --log-format json >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*"; echo "--- tallyd log"; cat "$log"; exit 1; }

# The address a component logged it is listening on ("" until it has).
bound() {
  sed -n 's/.*"component":"'"$1"'","addr":"\([^"]*\)".*/\1/p' "$log" | head -n 1
}

# Started once every listener is bound and logged.
for _ in $(seq 1 300); do
  grep -q 'tallyd started' "$log" && break
  kill -0 "$pid" 2>/dev/null || fail "tallyd exited at start"
  sleep 0.1
done
grep -q 'tallyd started' "$log" || fail "tallyd did not start"
http="$(bound http)"
udp_port="$(bound statsd_udp)"; udp_port="${udp_port##*:}"
tcp_port="$(bound statsd_tcp)"; tcp_port="${tcp_port##*:}"
gps_port="$(bound gps)"; gps_port="${gps_port##*:}"
[ -n "$http" ] && [ -n "$udp_port" ] && [ -n "$tcp_port" ] && [ -n "$gps_port" ] \
  || fail "a listening address is missing from the log"
curl -sf "$http/health/ready" >/dev/null || fail "tallyd is not ready"

# The README's examples.
echo "test.metric:1|c" | nc -u -w1 127.0.0.1 "$udp_port"
echo "test.metric:1|c" | nc -w1 127.0.0.1 "$tcp_port"
echo "test.metric:1|c" | nc -U -u -w1 "$sock"
echo "page.load:320|ms|#page:home" | nc -u -w1 127.0.0.1 "$udp_port"
echo "not a metric" | nc -u -w1 127.0.0.1 "$udp_port"

# Values appear after the window closes (flush interval 10 s by default, aligned to the clock).
# Each nc above waits a second, so a window may close between two of them: wait until every
# value has arrived, whichever windows carried them.
want='test_metric_total 3'
timer='page_load_count{page="home"} 1'
bad='tallyd_statsd_parse_errors_total{reason="invalid_format"} 1'
for _ in $(seq 1 300); do
  metrics="$(curl -s "$http/metrics")"
  grep -qx "$want" <<<"$metrics" && grep -qx "$timer" <<<"$metrics" && grep -qx "$bad" <<<"$metrics" \
    && break
  sleep 0.1
done
grep -qx "$want" <<<"$metrics" || fail "expected '$want' on /metrics"
grep -qx "$timer" <<<"$metrics" || fail "timer missing"
grep -qx "$bad" <<<"$metrics" || fail "bad line not counted"
curl -s "$http/health" | grep -q '"status":"ok"' || fail "/health not ok"

# docs/gps.md's example: an NMEA device that names itself.
printf '$PGID,boat-7*34\r\n$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68\r\n' \
  | nc -w1 127.0.0.1 "$gps_port"
curl -s "$http/api/monitoring/metrics/devices?active_only=true" | grep -q '"id":"boat-7"' \
  || fail "GPS device boat-7 not in the registry"

kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then fail "tallyd did not stop on SIGTERM"; fi
wait "$pid" || fail "tallyd exited non-zero"
[ ! -e "$sock" ] || fail "unix socket not removed on exit"
trap - EXIT
echo "smoke: 1 passed, 0 failed"
