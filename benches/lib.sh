# What the shell benchmarks share; sourced, with the bridge binary to
# measure as its first argument (default: this tree's release build).
# Leaves in `out` a directory removed at exit, in `pids` the processes
# killed at exit, in `bin` the bridge, in `double_addr` the address of a
# running PagerDuty double (the example program, which checks every event
# against the spec), and in `bench_flags` the `serve` flags that send to it
# with the rate limit raised.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet
    bin=target/release/prefect-pagerduty-bridge
fi
cargo build --release --quiet --example pagerduty-double
out=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$out"
}
trap cleanup EXIT

target/release/examples/pagerduty-double 127.0.0.1:0 >"$out/double.out" &
double_pid=$!
pids+=("$double_pid")
for _ in $(seq 100); do
    grep -q '^listening' "$out/double.out" 2>/dev/null && break
    sleep 0.05
done
double_addr=$(sed -n 's/^listening //p' "$out/double.out" | head -1)
bench_flags=(
    --pagerduty-url "http://$double_addr"
    --action bench=R0UTINGKEYAAAAAAAAAAAAAAAAAAAAAA
    --pagerduty-rate 1000000/s --pagerduty-burst 100000 --max-in-flight 64
)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
