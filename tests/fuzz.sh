#!/usr/bin/env bash
# Short coverage-guided fuzz run of every target in fuzz/ (see RELIABILITY.md, "Fuzzing"):
# builds them with cargo-fuzz on the nightly toolchain and runs each for FUZZ_SECONDS
# (default 5) starting from its committed corpus. Fails on any crash, panic, timeout or
# out-of-memory, leaving the input under fuzz/artifacts/<target>/.
#
# Needs rustup with a nightly toolchain (`rustup toolchain install nightly`); installs
# cargo-fuzz when it is missing. New inputs go to a temporary directory, so the committed
# corpus is only read.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-5}"
targets=(dogstatsd gps_stream otlp encoders queue_segments config gps_io)

if ! command -v rustup >/dev/null || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: the nightly Rust toolchain is missing (cargo-fuzz needs it):" >&2
    echo "  rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# No sanitizer: the fuzzed code has no `unsafe`, and without ASan a run does several times
# the executions. Debug assertions and overflow checks stay on (-a).
flags=(--sanitizer none --debug-assertions)
start=$(date +%s)
(cd fuzz && cargo +nightly fuzz build "${flags[@]}")
echo "tests/fuzz.sh: built in $(( $(date +%s) - start ))s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t" "fuzz/corpus/$t"
    echo "tests/fuzz.sh: $t for ${seconds}s"
    if ! (cd fuzz && cargo +nightly fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        2>"$scratch/$t.log"); then
        failed+=("$t")
        tail -n 40 "$scratch/$t.log" >&2
    fi
    grep -E '^(stat::number_of_executed_units|Done)' "$scratch/$t.log" || true
done
echo "tests/fuzz.sh: done in $(( $(date +%s) - start ))s"
if (( ${#failed[@]} )); then
    echo "tests/fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "tests/fuzz.sh: ${#targets[@]} targets, no crash"
