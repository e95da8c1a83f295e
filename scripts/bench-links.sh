#!/usr/bin/env bash
# What idle links cost the server (docs/BENCHMARKS.md): starts a release `stampline server` (or,
# with SPLIT=N, a core and N gateways), has `stampline bench links` log in COUNT links and hold
# them HOLD seconds, and reports the server's CPU during the hold (as a share of one core) and its
# memory per link: RSS with every link up minus RSS with the first half up (by then the
# password-hash pool has run at full width long enough to hold what its allocator keeps: 19 MiB
# per argon2id hash), divided by the links opened in between.
#
#   scripts/bench-links.sh COUNT HOLD            # e.g. 10000 60
#   SPLIT=2 scripts/bench-links.sh 10000 60      # through two gateways
#   SERVER_ARGS="--beat-interval-ms 1000" …      # another beat interval (all roles that beat)
set -euo pipefail
COUNT=${1:-1000}; HOLD=${2:-60}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/stampline}
[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN not found)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"
DIR=$(mktemp -d /var/tmp/stampline-links.XXXXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
# The load comes from one address: the firewall's per-source limits are raised by configuration
# (docs/FIREWALL.md), never bypassed.
cat >"$DIR/links.toml" <<TOML
[firewall]
max_connections = $((COUNT + 2000))
max_prelogin_connections = 2000
max_connections_per_source = 2000
[firewall.registrations]
per_source_per_minute = 100000
per_source_burst = 1000
global_per_minute = 100000
global_burst = 1000
[firewall.logins]
per_source_per_minute = 100000
per_source_burst = 1000
global_per_minute = 100000
global_burst = 1000
TOML
SPLIT=${SPLIT:-0}
wait_listening() { for _ in $(seq 1 300); do grep -q '"listening"' "$1" 2>/dev/null && return; sleep 0.1; done; echo "no listening line in $1" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$1" "$2"; }
ALSO=()
if [ "$SPLIT" -gt 0 ]; then
  # shellcheck disable=SC2086
  "$BIN" server --role core --data-dir "$DIR" --listen 127.0.0.1:0 --json ${SERVER_ARGS:-} \
    >"$DIR/server.out" 2>"$DIR/server.log" &
  PIDS+=($!)
  wait_listening "$DIR/server.out"
  INTERNAL=$(field "$DIR/server.out" internal)
  for g in $(seq 1 "$SPLIT"); do
    "$BIN" --json admin gateway-credentials --data-dir "$DIR" --name "gw$g" --out "$DIR/gw$g" >/dev/null
    # shellcheck disable=SC2086
    "$BIN" server --role gateway --listen 127.0.0.1:0 --core "$INTERNAL" --credentials "$DIR/gw$g" \
      --json --config "$DIR/links.toml" ${SERVER_ARGS:-} >"$DIR/gw$g.out" 2>>"$DIR/server.log" &
    PIDS+=($!)
    wait_listening "$DIR/gw$g.out"
    [ "$g" = 1 ] && URL=$(field "$DIR/gw1.out" url) || ALSO+=(--also "$(field "$DIR/gw$g.out" url)")
  done
  sleep 1
else
  # shellcheck disable=SC2086
  "$BIN" server --data-dir "$DIR" --listen 127.0.0.1:0 --json --config "$DIR/links.toml" ${SERVER_ARGS:-} \
    >"$DIR/server.out" 2>"$DIR/server.log" &
  PIDS+=($!)
  wait_listening "$DIR/server.out"
  URL=$(field "$DIR/server.out" url)
fi
ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
rss_all() { local out=""; for p in "${PIDS[@]}"; do out="$out $(rss_kib "$p")"; done; echo "$out"; }
exec 3< <(env STAMPLINE_SERVER="$URL" STAMPLINE_TRUST="$DIR/trust.pem" \
  "$BIN" bench links --count "$COUNT" --hold "$HOLD" "${ALSO[@]}" --json 2>"$DIR/bench.log")
read -r _REGISTERED <&3
read -r WARM <&3
RSS_BEFORE=$(rss_all)
read -r LINKED <&3
T0=$(ticks); S0=$(date +%s.%N); RSS_LINKED=$(rss_all)
read -r RESULT <&3 || true
T1=$(ticks); S1=$(date +%s.%N)
[ -n "$RESULT" ] || { echo "bench failed:" >&2; tail -5 "$DIR/bench.log" >&2; exit 1; }
python3 - "$RESULT" "$WARM" "$T0" "$T1" "$S0" "$S1" "$(getconf CLK_TCK)" "$RSS_BEFORE" "$RSS_LINKED" "$SPLIT" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
t0, t1, s0, s1, hz = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
before = [int(x) for x in sys.argv[8].split()]
linked = [int(x) for x in sys.argv[9].split()]
n = r["links"] - json.loads(sys.argv[2])["links"]
r["server_core_share_hold"] = round((t1 - t0) / hz / (s1 - s0), 4)
r["server_rss_mib_before"] = [round(b / 1024, 1) for b in before]
r["server_rss_mib_linked"] = [round(l / 1024, 1) for l in linked]
r["server_kib_per_link"] = round((sum(linked) - sum(before)) / max(n, 1), 2)
r["split_gateways"] = int(sys.argv[10])
print(json.dumps(r))
PY
