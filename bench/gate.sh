#!/usr/bin/env bash
# The performance gate, run by scripts/test (and so by CI): bench/gate.py measures, in about a
# minute, the gateway's JWT + rate-limit route against nginx (alternating rounds of a few
# seconds) and the instructions `fleetgate plan` executes per account (valgrind), and fails
# when either is worse than bench/baseline.json by more than its recorded noise band.
# docs/benchmarks.md, "The performance gate", says how the band and the thresholds were set
# and how to update the baseline (a deliberate commit).
#
#   bench/gate.sh                 check (exit 1 on a regression)
#   bench/gate.sh --runs 10       measure ten times, print the spread, check nothing
#
# Needs nginx, wrk and valgrind: installed from Debian's packages when missing (as root, or
# through sudo without a password); otherwise it says what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${FLEETGATE_TEST_PYTHON:-python3}"
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
        echo "bench/gate.sh needs: ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "installing ${missing[*]} (Debian packages) for the performance gate" >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || { "${SUDO[@]}" apt-get update -qq >/dev/null \
             && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
cargo build --release --locked -q -p fleetgate -p fleetgate-gateway
exec "$PYTHON" bench/gate.py "$@"
