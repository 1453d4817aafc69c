#!/usr/bin/env bash
# Smoke test: does exactly what the README shows, with nc and curl against the release binary
# running on its embedded defaults (UDP/TCP 8125, HTTP 9090). Bounded: gives up after 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in nc curl; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is missing (apt-get install netcat-openbsd curl)"; exit 1; }
done

cargo build --release --quiet
sock="$(mktemp -d)/dsd.socket"
log="$(mktemp)"
TALLYD_STATSD__UNIX_SOCKET="$sock" ./target/release/tallyd >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*"; echo "--- tallyd log"; cat "$log"; exit 1; }

# Ready once every listener is bound.
for _ in $(seq 1 100); do
  curl -sf localhost:9090/health/ready >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf localhost:9090/health/ready >/dev/null || fail "tallyd did not become ready"

# The README's examples.
echo "test.metric:1|c" | nc -u -w1 localhost 8125
echo "test.metric:1|c" | nc -w1 localhost 8125
echo "test.metric:1|c" | nc -U -u -w1 "$sock"
echo "page.load:320|ms|#page:home" | nc -u -w1 localhost 8125
echo "not a metric" | nc -u -w1 localhost 8125

# Values appear after the window closes (flush interval 10 s by default, aligned to the clock).
# Each nc above waits a second, so a window may close between two of them: wait until every
# value has arrived, whichever windows carried them.
want='test_metric_total 3'
timer='page_load_count{page="home"} 1'
bad='tallyd_statsd_parse_errors_total{reason="invalid_format"} 1'
for _ in $(seq 1 300); do
  metrics="$(curl -s localhost:9090/metrics)"
  grep -qx "$want" <<<"$metrics" && grep -qx "$timer" <<<"$metrics" && grep -qx "$bad" <<<"$metrics" \
    && break
  sleep 0.1
done
grep -qx "$want" <<<"$metrics" || fail "expected '$want' on /metrics"
grep -qx "$timer" <<<"$metrics" || fail "timer missing"
grep -qx "$bad" <<<"$metrics" || fail "bad line not counted"
curl -s localhost:9090/health | grep -q '"status":"ok"' || fail "/health not ok"

# The README's GPS example: an NMEA device that names itself.
printf '$PGID,boat-7*34\r\n$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68\r\n' \
  | nc -w1 localhost 5000
curl -s 'localhost:9090/api/monitoring/metrics/devices?active_only=true' | grep -q '"id":"boat-7"' \
  || fail "GPS device boat-7 not in the registry"

kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then fail "tallyd did not stop on SIGTERM"; fi
wait "$pid" || fail "tallyd exited non-zero"
[ ! -e "$sock" ] || fail "unix socket not removed on exit"
trap - EXIT
echo "smoke: 1 passed, 0 failed"
