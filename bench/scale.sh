#!/usr/bin/env bash
# Benchmark (not a test): how fleetgate scales with the fleet. For each size N (default
# 1,000 and 10,000), a generated fleet in a git repo and a file:// target in a temp dir, and
# the wall time and peak RSS (`/usr/bin/time`) of every step an operator runs on it:
#   plan of all creates (json, text, markdown), apply --all-at-once, plan with no change,
#   plan --base over a change to every account, drift, apply of that change, rollback --to
#   the previous commit, release.
# Prints a table with seconds per 1,000 accounts (linearity) and the memory goals
# (1,000 accounts < 100 MiB, 10,000 < 256 MiB), met or NOT met per row.
# SCALE_MOTO=1 adds 1,000 accounts in moto's server: CPU time (user+sys) per account of a
# full plan next to the floor's (reconciler/examples/aws_floor.rs: AssumeRole + GetObject
# per account). See docs/benchmarks.md.
#
#   bench/scale.sh [SIZES] [RUNS]        e.g. bench/scale.sh "1000 10000" 1; SCALE_MOTO=1 bench/scale.sh "" for moto only
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${1-1000 10000}"
RUNS="${2:-1}"
PYTHON="${FLEETGATE_TEST_PYTHON:-python3}"

[ -x /usr/bin/time ] || { echo "bench/scale.sh needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
if [ "${SCALE_MOTO:-0}" = 1 ]; then
    "$PYTHON" -c 'import moto.server, flask' 2>/dev/null || "$PYTHON" -m pip install --quiet --user 'moto[server]>=5.1,<6'
    cargo build --release --locked -q -p fleetgate --bin fleetgate --example aws_floor
else
    cargo build --release --locked -q -p fleetgate --bin fleetgate
fi
exec "$PYTHON" bench/scale.py "$SIZES" "$RUNS"
