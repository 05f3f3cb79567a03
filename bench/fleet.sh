#!/usr/bin/env bash
# Benchmark (not a test): `fleetgate plan --target aws` on a generated fleet of N accounts
# (default 1,000) in moto's server, against
#   (a) the floor: only the AWS calls a plan needs (AssumeRole + GetObject of the pointer per
#       account, same SDK, same concurrency): reconciler/examples/aws_floor.rs;
#   (b) what a user would write instead: a shell loop of `aws sts assume-role` + `aws s3 cp`
#       (awscli from pip), run on 50 accounts and scaled to N.
# Prints medians of RUNS runs, the ratios, and fleetgate's peak RSS. See docs/benchmarks.md.
#
#   bench/fleet.sh [ACCOUNTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS="${1:-1000}"
RUNS="${2:-3}"
PYTHON="${FLEETGATE_TEST_PYTHON:-python3}"

"$PYTHON" -c 'import moto.server, flask' 2>/dev/null || "$PYTHON" -m pip install --quiet --user 'moto[server]>=5.1,<6'
command -v aws >/dev/null || "$PYTHON" -m pip install --quiet --user awscli
export PATH="$HOME/.local/bin:$PATH"

cargo build --release --locked -q -p fleetgate --bin fleetgate --example aws_floor
exec "$PYTHON" bench/fleet.py "$ACCOUNTS" "$RUNS"
