#!/usr/bin/env bash
# Benchmark (not a test): rollouts and rollbacks on a generated fleet of N accounts (default
# 1,000) in moto's server, each against its floor, alternating in one run:
#   (a) a new commit reaching `fleetgate watch` (signed webhook) -> every account's pointer
#       moved, wave by wave; floor: the same writes and nothing else (AssumeRole, GetObject of
#       the pointer, PutObject of the bundle and of the pointer per account, same SDK and
#       concurrency): reconciler/examples/aws_floor.rs --apply;
#   (b) `fleetgate rollback --to <previous commit>` on the whole fleet; floor: AssumeRole,
#       GetObject of the pointer, GetObject of the stored bundle it goes back to (checked
#       against its sha256: a safe rollback never points at a bundle it has not checked) and
#       PutObject of the pointer per account (aws_floor --point); also shown without the
#       bundle's check (--point-unchecked).
# Bakes are 0 s and no gateway runs (noGateway: skip): the machinery is measured, not the
# bake times a fleet chooses. Prints medians of RUNS runs. See docs/benchmarks.md.
#
#   bench/rollout.sh [ACCOUNTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${1:-1000}"
RUNS="${2:-3}"
PYTHON="${FLEETGATE_TEST_PYTHON:-python3}"

"$PYTHON" -c 'import moto.server, flask, boto3' 2>/dev/null || "$PYTHON" -m pip install --quiet --user 'moto[server]>=5.1,<6'

cargo build --release --locked -q -p fleetgate --bin fleetgate --example aws_floor
exec "$PYTHON" bench/rollout.py "$ACCOUNTS" "$RUNS"
