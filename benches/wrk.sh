#!/usr/bin/env bash
# A load run like the side-by-side comparison in the performance issue: wrk (Debian's
# package) at 128 keep-alive connections against the release bridge, every
# request a distinct failed flow run (the `{{ event | tojson }}` capture with
# its ids changed), and the PagerDuty double as a separate program that
# checks every event against the spec. Prints wrk's rate and latency, what
# the spool delivered, and the CPU the bridge and the double used per
# accepted event (the double also writes a JSON line per request to a file,
# which the in-process double of `cargo bench --bench load` does not).
#
# Needs wrk, curl and python3.
# Usage: benches/wrk.sh [bridge binary]
#   (default: this tree's, built with `cargo build --release`)
#   WRK_SECS (default 10), WRK_CONC (default 128), WRK_THREADS (default 2).
source "$(dirname "$0")/lib.sh"
secs=${WRK_SECS:-10}
conc=${WRK_CONC:-128}
threads=${WRK_THREADS:-2}

# The request script: the capture split around its two ids, which each
# request fills with its thread and sequence number.
python3 - "$out/bench.lua" <<'PY'
import json, sys
body = json.load(open("fixtures/prefect/captures/failed_event_tojson.json"))[0]["body"]
run, event = "39eed61c-5f3c-4e8c-8dbe-05b23d4c268e", "01a2214c-827e-7f4d-8af1-2c04918bd893"
i, j = body.index(event), body.index(run)
assert i < j and "]==]" not in body
head, mid, tail = body[:i], body[i + len(event):j], body[j + len(run):]
q = lambda s: "[==[" + s + "]==]"
open(sys.argv[1], "w").write(f"""
local head, mid, tail = {q(head)}, {q(mid)}, {q(tail)}
local threads, counter = 0, 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
request = function()
  counter = counter + 1
  local n = string.format("%04d%08d", tid, counter)
  return wrk.format("POST", "/v1/prefect/bench", {{["Content-Type"] = "application/json"}},
    head .. "10000000-0000-4000-8000-" .. n .. mid .. "00000000-0000-4000-8000-" .. n .. tail)
end
""")
PY

port=$(free_port)
"$bin" serve --listen "127.0.0.1:$port" --spool "$out/spool.redb" "${bench_flags[@]}" >"$out/bridge.log" 2>&1 &
bridge_pid=$!
pids+=("$bridge_pid")
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.1
done

# utime + stime in clock ticks (100 per second).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
b0=$(ticks "$bridge_pid")
d0=$(ticks "$double_pid")
TIMEFORMAT='%U %S'
{ time wrk -t"$threads" -c"$conc" -d"${secs}s" --latency -s "$out/bench.lua" "http://127.0.0.1:$port" >"$out/wrk.out"; } 2>"$out/wrk.cpu"
b1=$(ticks "$bridge_pid")
d1=$(ticks "$double_pid")
grep -E "requests in|Requests/sec| 50%| 99%|Non-2xx|Socket errors" "$out/wrk.out"
n=$(awk '/requests in/ {print $1}' "$out/wrk.out")
# Let the last ones be delivered.
for _ in $(seq 100); do
    spool=$(curl -s "http://127.0.0.1:$port/v1/spool")
    case $spool in *'"queued":0,'*) break ;; esac
    sleep 0.1
done
echo "spool: $spool"
wrk_us=$(awk -v n="$n" '{printf "%d", ($1 + $2) * 1000000 / n}' "$out/wrk.cpu")
echo "CPU per accepted event: bridge $(((b1 - b0) * 10000 / n)) µs, double $(((d1 - d0) * 10000 / n)) µs, wrk $wrk_us µs"
