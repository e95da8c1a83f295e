#!/usr/bin/env bash
# End-to-end throughput of the issue → confirm path (docs/BENCHMARKS.md).
# Starts a release `stampline server` on a fresh data dir (SQLite by default, or the PostgreSQL
# database given in DATABASE, which is dropped and made again), runs `stampline bench` against it
# and prints the bench's JSON with the CPU seconds the server and the load generator used.
#
#   scripts/bench-e2e.sh LINKS COUNT DEPTH [RATE]     # e.g. 16 20000 8; RATE: indicia/s on a
#                                                     # fixed schedule (bench --rate)
#   DATABASE=postgres://postgres@127.0.0.1:5432/stampline_bench scripts/bench-e2e.sh 16 4000 8
#   BIN=/path/to/stampline SERVER_ARGS="--verify-signatures-every 1" scripts/bench-e2e.sh …
#   KEEP_LOG=/tmp/server.log scripts/bench-e2e.sh …     # keep the server's log
#   SPLIT=2 scripts/bench-e2e.sh 16 30000 32          # split mode: a core (--role core) and two
#                                                     # gateways (--role gateway); the links are
#                                                     # spread over the gateways, CPU is summed
set -euo pipefail
LINKS=${1:-16}; COUNT=${2:-20000}; DEPTH=${3:-8}; RATE=${4:-0}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/stampline}
[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN not found)" >&2; exit 2; }
DIR=$(mktemp -d /var/tmp/stampline-bench.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; [ -z "${KEEP_LOG:-}" ] || cp "$DIR/server.log" "$KEEP_LOG"; rm -rf "$DIR"' EXIT
DB_ARGS=()
if [ -n "${DATABASE:-}" ]; then
  name=${DATABASE##*/}; admin=${DATABASE%/*}/postgres
  psql "$admin" -qc "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
  DB_ARGS=(--database "$DATABASE")
fi
# The bench registers and logs in one user per link from one address: its set-up would otherwise
# be paced by the firewall's per-source rates (docs/FIREWALL.md), which are not what is measured.
cat >"$DIR/bench.toml" <<'TOML'
[firewall.registrations]
per_source_per_minute = 600
per_source_burst = 200
global_per_minute = 600
global_burst = 200
[firewall.logins]
per_source_per_minute = 600
per_source_burst = 200
global_per_minute = 1200
global_burst = 200
TOML
SPLIT=${SPLIT:-0}
wait_listening() { for _ in $(seq 1 300); do grep -q '"listening"' "$1" 2>/dev/null && return; sleep 0.1; done; echo "no listening line in $1" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$1" "$2"; }
ALSO=()
if [ "$SPLIT" -gt 0 ]; then
  # shellcheck disable=SC2086
  "$BIN" server --role core --data-dir "$DIR" --listen 127.0.0.1:0 --json "${DB_ARGS[@]}" ${SERVER_ARGS:-} \
    >"$DIR/server.out" 2>"$DIR/server.log" &
  PIDS+=($!)
  wait_listening "$DIR/server.out"
  INTERNAL=$(field "$DIR/server.out" internal)
  for g in $(seq 1 "$SPLIT"); do
    "$BIN" --json admin gateway-credentials --data-dir "$DIR" --name "gw$g" --out "$DIR/gw$g" >/dev/null
    "$BIN" server --role gateway --listen 127.0.0.1:0 --core "$INTERNAL" --credentials "$DIR/gw$g" \
      --json --config "$DIR/bench.toml" >"$DIR/gw$g.out" 2>>"$DIR/server.log" &
    PIDS+=($!)
    wait_listening "$DIR/gw$g.out"
    [ "$g" = 1 ] && URL=$(field "$DIR/gw1.out" url) || ALSO+=(--also "$(field "$DIR/gw$g.out" url)")
  done
  # A gateway answers `unavailable` until it has reached the core.
  sleep 1
else
  # shellcheck disable=SC2086
  "$BIN" server --data-dir "$DIR" --listen 127.0.0.1:0 --json --config "$DIR/bench.toml" "${DB_ARGS[@]}" ${SERVER_ARGS:-} \
    >"$DIR/server.out" 2>"$DIR/server.log" &
  PIDS+=($!)
  wait_listening "$DIR/server.out"
  URL=$(field "$DIR/server.out" url)
fi
# CPU ticks of the server's processes (all of them in split mode).
cpu() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
TICKS=$(getconf CLK_TCK)
# Sample the server's CPU every 100 ms, so that the measured run (the bench's last elapsed_s)
# can be told apart from the set-up (argon2id logins).
( while kill -0 "${PIDS[0]}" 2>/dev/null; do echo "$(date +%s.%N) $(cpu)"; sleep 0.1; done ) \
  >"$DIR/cpu.samples" 2>/dev/null &
SAMPLER=$!
before=$(cpu)
/usr/bin/time -f '%U %S' -o "$DIR/bench.time" env STAMPLINE_SERVER="$URL" STAMPLINE_TRUST="$DIR/trust.pem" \
  "$BIN" bench --links "$LINKS" --count "$COUNT" --depth "$DEPTH" --rate "$RATE" "${ALSO[@]}" --json >"$DIR/bench.json"
end=$(date +%s.%N)
after=$(cpu)
kill "$SAMPLER" 2>/dev/null || true
read -r bu bs <"$DIR/bench.time"
python3 - "$DIR/bench.json" "$before" "$after" "$TICKS" "$bu" "$bs" "$end" "$DIR/cpu.samples" "$SPLIT" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
before, after, ticks = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
end = float(sys.argv[7])
start = end - b["elapsed_s"]
samples = [tuple(map(float, l.split())) for l in open(sys.argv[8]) if len(l.split()) == 2]
at_start = [c for t, c in samples if t <= start]
run_ticks = after - (at_start[-1] if at_start else before)
b["server_cpu_s_total"] = round((after - before) / ticks, 2)
b["server_cpu_s_run"] = round(run_ticks / ticks, 2)
b["server_cores_run"] = round(run_ticks / ticks / b["elapsed_s"], 2)
b["server_cpu_us_per_indicium"] = round(run_ticks / ticks / max(b["issued"], 1) * 1e6)
b["bench_cpu_s_total"] = round(float(sys.argv[5]) + float(sys.argv[6]), 2)
b["split_gateways"] = int(sys.argv[9])
print(json.dumps(b))
PY
