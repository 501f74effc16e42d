#!/usr/bin/env bash
# Instructions per accepted and delivered event of the whole bridge (its
# own code, hyper, reqwest, tokio, redb, the allocator, logging; not the
# kernel), counted by valgrind's callgrind while the release binary takes
# events over loopback and delivers them to the PagerDuty double. Time on a
# shared machine moves by a third from one minute to the next; this count
# moves by a few per cent (thread interleaving changes how many events share
# a commit), so two builds compare where the load benchmark cannot tell them
# apart. It leaves out the kernel (syscalls, loopback TCP, fsync) and cache
# misses; `strace -c -f` on the bridge counts the syscalls.
#
# Every event is a distinct failed flow run (the `{{ event | tojson }}`
# capture with its ids changed), sent on 32 keep-alive connections at once
# (BRIDGE_INSTR_CONC); how many share a commit depends on that.
#
# Needs valgrind and python3.
# Usage: benches/bridge_instructions.sh [bridge binary]
#   (default: this tree's, built with `cargo build --release`)
#   BRIDGE_INSTR_RUNS=3 repeats each count and reports the median slope;
#   BRIDGE_INSTR_KEEP=FILE keeps the last callgrind profile (for
#   callgrind_annotate --inclusive=yes FILE).
source "$(dirname "$0")/lib.sh"
runs=${BRIDGE_INSTR_RUNS:-1}
conc=${BRIDGE_INSTR_CONC:-32}

# count N: instructions the bridge ran to start, take N events, deliver
# them all and stop.
count() {
    local n=$1 port dir pid
    port=$(free_port)
    dir=$(mktemp -d -p "$out")
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg" "$bin" serve \
        --listen "127.0.0.1:$port" --spool "$dir/spool.redb" "${bench_flags[@]}" \
        --log-format json >"$dir/log" 2>"$dir/valgrind" &
    pid=$!
    pids+=("$pid")
    python3 - "$port" "$n" "$conc" <<'EOF'
import http.client, json, sys, threading, time

port, n, conc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/healthz")
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("the bridge did not become ready")
    time.sleep(0.2)

captured = json.load(open("fixtures/prefect/captures/failed_event_tojson.json"))[0]["body"]
run, event = "39eed61c-5f3c-4e8c-8dbe-05b23d4c268e", "01a2214c-827e-7f4d-8af1-2c04918bd893"
assert run in captured and event in captured
refused = []

def send(worker, count):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(count):
        tail = f"{worker:04d}{i:08d}"
        body = captured.replace(run, "00000000-0000-4000-8000-" + tail).replace(
            event, "10000000-0000-4000-8000-" + tail)
        c.request("POST", "/v1/prefect/bench", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 202:
            refused.append(r.status)

threads = [threading.Thread(target=send, args=(w, n // conc + (w < n % conc))) for w in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if refused:
    sys.exit(f"not accepted: {refused[:5]} ({len(refused)} in all)")
while True:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/v1/spool")
    spool = json.loads(c.getresponse().read())
    if spool["delivered"] >= n:
        break
    if time.time() > deadline + 600:
        sys.exit(f"only {spool['delivered']} of {n} delivered")
    time.sleep(0.2)
EOF
    kill -TERM "$pid"
    wait "$pid" || true
    if [ -n "${BRIDGE_INSTR_KEEP:-}" ]; then cp "$dir/cg" "$BRIDGE_INSTR_KEEP"; fi
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$dir/valgrind"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

echo "$bin"
slopes=()
for _ in $(seq "$runs"); do
    # The slope between 300 and 1,300 events leaves start-up and shutdown out.
    a=$(count 300)
    b=$(count 1300)
    slope=$(((b - a) / 1000))
    echo "one run: $slope instructions per event"
    slopes+=("$slope")
done
echo "median of $runs: $(printf '%s\n' "${slopes[@]}" | median) instructions per accepted and delivered event"
