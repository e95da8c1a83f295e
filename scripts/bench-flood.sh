#!/usr/bin/env bash
# Pre-login floods against a release server (docs/BENCHMARKS.md, docs/FIREWALL.md).
# For each attack: a fresh release `stampline server` (default settings: SQLite, the software
# crypto device, the built-in sandboxes, the default firewall), `stampline bench flood` from
# several loopback sources while a legitimate user logs in and buys, and the server's resident
# memory and threads sampled every 100 ms: before the attack, its peak during it, and SETTLE
# seconds after it ended. Prints one JSON line per attack.
#
#   scripts/bench-flood.sh [ATTACK ...]            # default: all of them
#   SECONDS_EACH=20 SOURCES=8 TASKS=200 SETTLE=10 scripts/bench-flood.sh hello
#   BIN=/path/to/stampline scripts/bench-flood.sh
#   SERVER_BIN=/path/to/older/stampline scripts/bench-flood.sh   # attack another build's server
set -euo pipefail
ATTACKS=("$@")
[ ${#ATTACKS[@]} -gt 0 ] || ATTACKS=(slow-body big-body connections hello lockout signup status)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/stampline}
[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN not found)" >&2; exit 2; }
SERVER_BIN=${SERVER_BIN:-$BIN}
SECONDS_EACH=${SECONDS_EACH:-20}; SOURCES=${SOURCES:-8}; SETTLE=${SETTLE:-10}
# Each attack's tasks (connections or requests at once) unless TASKS says otherwise.
declare -A TASKS_FOR=([slow-body]=2000 [big-body]=200 [connections]=4000 [hello]=200 [lockout]=50 [signup]=100 [status]=100)
ulimit -n 65536 2>/dev/null || true

for attack in "${ATTACKS[@]}"; do
  DIR=$(mktemp -d /var/tmp/stampline-flood.XXXXXX)
  "$SERVER_BIN" server --data-dir "$DIR" --listen 127.0.0.1:0 --json >"$DIR/server.out" 2>"$DIR/server.log" &
  SERVER=$!
  for _ in $(seq 1 300); do grep -q '"listening"' "$DIR/server.out" 2>/dev/null && break; sleep 0.1; done
  URL=$(grep -o 'https://[0-9.:]*' "$DIR/server.out" | head -1)
  ( while kill -0 "$SERVER" 2>/dev/null; do
      awk -v t="$(date +%s.%N)" '/^VmRSS/ {r=$2} /^Threads/ {th=$2} END {print t, r, th}' "/proc/$SERVER/status"
      sleep 0.1
    done ) >"$DIR/samples" 2>/dev/null &
  SAMPLER=$!
  sleep 1
  start=$(date +%s.%N)
  STAMPLINE_SERVER="$URL" STAMPLINE_TRUST="$DIR/trust.pem" "$BIN" bench flood --attack "$attack" \
    --seconds "$SECONDS_EACH" --sources "$SOURCES" --tasks "${TASKS:-${TASKS_FOR[$attack]}}" --json \
    >"$DIR/flood.json" 2>"$DIR/flood.log" || { cat "$DIR/flood.log" >&2; }
  end=$(date +%s.%N)
  sleep "$SETTLE"
  kill "$SAMPLER" 2>/dev/null || true
  kill -INT "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  python3 - "$DIR/flood.json" "$DIR/samples" "$start" "$end" <<'PY'
import json, sys
try:
    b = json.load(open(sys.argv[1]))
except Exception as e:
    b = {"error": f"bench flood failed: {e}"}
start, end = float(sys.argv[3]), float(sys.argv[4])
s = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if len(l.split()) == 3]
before = [r for t, r, _ in s if t <= start]
during = [(r, th) for t, r, th in s if start <= t <= end]
mib = lambda kb: round(kb / 1024, 1)
b["server_rss_before_mib"] = mib(before[-1]) if before else None
b["server_rss_peak_mib"] = mib(max(r for r, _ in during)) if during else None
b["server_threads_peak"] = int(max(th for _, th in during)) if during else None
b["server_rss_after_mib"] = mib(s[-1][1]) if s else None
print(json.dumps(b))
PY
  rm -rf "$DIR"
done
