#!/usr/bin/env bash
# Idempotency budget under a flood (issue 14): unique-key transfers from one
# tenant (alice, tenant-a) through the release reference gateway, while a
# second tenant (bob, tenant-b) sends one transfer every 0.3 s; the
# gateway's RSS is sampled every 3 s. Loopback only; bounded by DUR.
#
#   bash benches/flood/run.sh            # DUR=150 seconds of load
#
# Needs wrk (Debian: apt-get install wrk) and curl. Gateway on core 0,
# wrk on core 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${DUR:-150}
cargo build --release --example reference_gateway --features full
GW=${CARGO_TARGET_DIR:-target}/release/examples/reference_gateway
D=$(mktemp -d)
trap 'kill "${BOBLOOP:-}" "${RSSLOOP:-}" "${PID:-}" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$D"' EXIT
mkdir -p "$D/config"
cp examples/gateway/config/tenants.yaml "$D/config/"
# This flood measures the idempotency budget, not the rate limiter: no limits.
printf 'apiVersion: finmesh.io/v1\nkind: RateLimitPolicy\nmetadata: {name: flood}\nspec: {rules: []}\n' > "$D/config/ratelimits.yaml"
{ cat examples/gateway/config/rbac.yaml; echo '---'; cat benches/flood/bob-moves-money.yaml; } > "$D/config/rbac.yaml"
TOKEN=$("$GW" token alice); BOB=$("$GW" token bob); export TOKEN
taskset -c 0 "$GW" --addr 127.0.0.1:18080 --metrics-addr 127.0.0.1:19464 \
  --config "$D/config" --audit-log "$D/audit.log" > "$D/gw.out" 2> "$D/gw.err" &
PID=$!
for _ in $(seq 50); do curl -s -o /dev/null localhost:18080/livez && break; sleep 0.1; done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "baseline RSS: $(grep VmRSS /proc/$PID/status | awk '{print $2}') kB"
( i=0; while kill -0 $PID 2>/dev/null; do i=$((i+1))
    curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 localhost:18080/v1/transfer \
      -H "authorization: Bearer $BOB" -H 'x-tenant-namespace: tenant-b' \
      -H "x-order-id: bob-$i" -H "idempotency-key: bob-$i" -H 'content-type: application/json' \
      -d '{"from":"acc-1","to":"acc-2","amount":"0.01"}' >> "$D/bob.log" || true
    sleep 0.3; done ) &
BOBLOOP=$!
( while kill -0 $PID 2>/dev/null; do grep VmRSS /proc/$PID/status | awk '{print $2}' >> "$D/rss.log"; sleep 3; done ) &
RSSLOOP=$!
taskset -c 1 wrk -t2 -c32 -d"${DUR}s" -s benches/flood/transfers.lua http://127.0.0.1:18080 | tail -8
kill $BOBLOOP 2>/dev/null || true
echo "tenant-b transfers during the flood: $(sort "$D/bob.log" | uniq -c | tr '\n' ' ')"
echo "RSS kB min/max: $(sort -n "$D/rss.log" | sed -n '1p;$p' | tr '\n' ' ') (peak $(grep VmHWM /proc/$PID/status | awk '{print $2}') kB)"
