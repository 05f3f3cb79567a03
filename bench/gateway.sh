#!/usr/bin/env bash
# Benchmark (not a test): fleetgate-gateway against nginx and haproxy as reverse proxies, on
# loopback, same backend (nginx serving a fixed body), same load tool (wrk), in one run:
#   (a) the backend direct          (b) nginx as reverse proxy, upstream keepalive
#   (c) haproxy                     (d) fleetgate-gateway, public route
#   (e) fleetgate-gateway with JWT validation (RS256) and a rate limit that does not trigger
#   (f) gateway/examples/bare_proxy.rs: hyper's server + hyper-util's pooled client and nothing
#       else, on the gateway's runtime: the floor of the gateway's stack
#   (g) the same with one upstream connection per client connection instead of the pool
# Every server gets one worker (nginx worker_processes 1, haproxy nbthread 1, the gateway
# TOKIO_WORKER_THREADS=1, which it runs on tokio's current-thread scheduler like --workers 1)
# and the proxies run on the second core, wrk and the backend on the first (taskset;
# FLEETGATE_BENCH_UNPINNED=1 leaves placement to the scheduler), so every row and every run
# shares the 2 cores the same way; access logs are off everywhere. Prints medians of ROUNDS
# rounds (req/s, p50, p99), each ratio to (b), and the gateway's idle RSS.
#
#   bench/gateway.sh [ROUNDS] [SECONDS]        (defaults: 5 rounds of 30 s)
#
# Needs wrk, nginx and haproxy (Debian: apt-get install wrk nginx-light haproxy); it installs
# nothing itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
SECONDS_EACH="${2:-30}"
missing=()
for tool in wrk nginx haproxy python3 openssl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "bench/gateway.sh needs: ${missing[*]} (Debian: apt-get install wrk nginx-light haproxy openssl)" >&2
    exit 1
fi
cargo build --release --locked -q -p fleetgate-gateway --bin fleetgate-gateway --example bare_proxy
exec python3 bench/gateway.py "$ROUNDS" "$SECONDS_EACH"
