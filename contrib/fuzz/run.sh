#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60), one after the other,
# and print each one's executions and coverage.
#   contrib/fuzz/run.sh 600          # 10 minutes each
#   JOBS=2 contrib/fuzz/run.sh 600   # two targets at a time
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (cargo install cargo-fuzz --locked). Seeds: contrib/fuzz/seeds/<target>
# (committed); what the fuzzer adds goes to contrib/fuzz/corpus/<target>
# (not committed); crashes to contrib/fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
jobs="${JOBS:-1}"
targets=(fd3 saslauthd http_head filter home php_json config ad_diagnostic)
cargo +nightly fuzz build --fuzz-dir . >/dev/null
mkdir -p logs
run_one() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  cargo +nightly fuzz run --fuzz-dir . "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
    >"logs/$t.log" 2>&1 || { echo "$t: FAILED (see contrib/fuzz/logs/$t.log)"; return 1; }
  local execs cov
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "logs/$t.log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  echo "$t: ${seconds}s, $execs executions, coverage $cov edges, corpus $(ls "corpus/$t" | wc -l) inputs, no crash"
}
failed=0
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
exit "$failed"
