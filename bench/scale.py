"""The body of bench/scale.sh: every operator step on generated fleets of growing size, on a
file:// target, with wall time and peak RSS from /usr/bin/time; optionally (SCALE_MOTO=1) the
CPU time per account of a full plan on 1,000 accounts in moto next to its floor's.

Run through bench/scale.sh, which builds the binaries first.

    python3 bench/scale.py "1000 10000" 1
    SCALE_MOTO=1 python3 bench/scale.py "" 1      # moto only
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

from fleet import FLEETGATE, FLOOR, free_port

# Peak RSS goals, MiB, by fleet size; sizes without one print "-".
MEMORY_GOALS = {1000: 100, 10000: 256}
# Wall time is linear when the seconds per 1,000 accounts at a size are at most this many
# times those at the smallest size measured (fixed costs only make larger sizes look better).
LINEAR_SLACK = 1.25
MOTO_ACCOUNTS = 1000


def git(config, *args):
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=config, check=True, stdout=subprocess.DEVNULL)


def head(config):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=config, check=True,
                          capture_output=True, text=True).stdout.strip()


def timed(cmd, env, ok_codes, out_path=os.devnull):
    """Runs cmd under /usr/bin/time; returns (wall s, peak RSS MiB, user+sys CPU s).
    Standard output goes to out_path; an exit code outside ok_codes stops the benchmark."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".time") as t, \
            open(out_path, "wb") as out, tempfile.TemporaryFile() as err:
        code = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%e %M %U %S", *cmd],
                              env=env, stdout=out, stderr=err).returncode
        if code not in ok_codes:
            err.seek(0)
            sys.exit(f"{' '.join(cmd[:2])} exited {code} (expected {ok_codes}):\n"
                     f"{err.read().decode(errors='replace')[-3000:]}")
        # /usr/bin/time writes "Command exited with non-zero status N" before its line.
        wall, kib, user, sys_ = t.read().strip().splitlines()[-1].split()
        return float(wall), int(kib) / 1024, float(user) + float(sys_)


def bump_base(config, i):
    """A change to every account's bundle: base/gateway.yaml's maxBodyBytes, plus one."""
    path = os.path.join(config, "base/gateway.yaml")
    with open(path) as f:
        text = f.read()
    m = re.search(r"maxBodyBytes: (\d+)", text)
    text = text.replace(m.group(0), f"maxBodyBytes: {int(m.group(1)) + 1}", 1)
    with open(path, "w") as f:
        f.write(text)
    git(config, "commit", "-q", "-am", f"bench change {i}")


def base_env(work):
    env = dict(os.environ, FLEETGATE_CACHE_DIR=os.path.join(work, "cache"),
               FLEETGATE_APPLIED_BY="bench", CI="true", NO_COLOR="1")
    env.pop("AWS_ENDPOINT_URL", None)
    return env


def generate(config, accounts):
    subprocess.run([FLEETGATE, "example-fleet", "--accounts", str(accounts), "--out", config],
                   check=True, stdout=subprocess.DEVNULL)
    git(config, "init", "-q", "-b", "main")
    git(config, "add", ".")
    git(config, "commit", "-q", "-m", "generated fleet")


def one_size(accounts, run):
    """Every step on a fleet of `accounts`; returns [(step, wall, MiB, output bytes)]."""
    work = tempfile.mkdtemp(prefix="fleetgate-scale-bench-")
    try:
        env = base_env(work)
        config = os.path.join(work, "config")
        generate(config, accounts)
        target = "file://" + os.path.join(work, "target")
        os.makedirs(os.path.join(work, "target"))
        common = ["--repo", config, "--target", target]
        rows = []

        def step(name, args, ok_codes, keep_output=False):
            out = os.path.join(work, "out") if keep_output else os.devnull
            wall, mib, _ = timed([FLEETGATE, *args, *common], env, ok_codes, out)
            size = os.path.getsize(out) if keep_output else None
            rows.append((name, wall, mib, size))
            print(f"  run {run}, {accounts} accounts, {name}: {wall:.2f}s, {mib:.0f} MiB"
                  + (f", {size:,} bytes out" if size is not None else ""), flush=True)

        for fmt in ("json", "text", "markdown"):
            step(f"plan, all creates, --format {fmt}", ["plan", "--format", fmt], (2,), True)
        step("apply --all-at-once, all creates", ["apply", "--all-at-once"], (0,))
        step("plan, no change (no --base)", ["plan"], (0,), True)
        previous = head(config)
        bump_base(config, run)
        step("plan --base, all accounts changed", ["plan", "--base", previous], (2,), True)
        step("drift (all behind)", ["drift"], (2,))
        step("apply --all-at-once, all updates", ["apply", "--all-at-once"], (0,))
        step("rollback --to the previous commit",
             ["rollback", "--to", previous, "--branch", "main"], (0,))
        step("release", ["release", "--branch", "main"], (0,))
        return rows
    finally:
        subprocess.run(["rm", "-rf", work])


def verdict(ok):
    return "met" if ok else "NOT met"


def file_table(results, sizes):
    """results: {(size, run): [(step, wall, mib, bytes)]}."""
    smallest = min(sizes)
    per_k_at_smallest = {}
    for (size, run), rows in results.items():
        if size == smallest:
            for name, wall, _, _ in rows:
                per_k_at_smallest.setdefault(name, []).append(wall / size * 1000)
    print()
    print("| run | step | N | seconds | s per 1,000 | peak MiB | memory goal | linear |")
    print("| --- | --- | --: | --: | --: | --: | --- | --- |")
    for (size, run), rows in sorted(results.items()):
        for name, wall, mib, _ in rows:
            per_k = wall / size * 1000
            goal = MEMORY_GOALS.get(size)
            mem = f"< {goal} MiB: {verdict(mib < goal)}" if goal else "-"
            if size == smallest:
                linear = "(base)"
            else:
                base = min(per_k_at_smallest[name])
                linear = f"{per_k / base:.2f}x: {verdict(per_k <= LINEAR_SLACK * base)}"
            print(f"| {run} | {name} | {size:,} | {wall:.2f} | {per_k:.2f} | {mib:.0f} "
                  f"| {mem} | {linear} |")
    print(f"\nlinear: seconds per 1,000 accounts at most {LINEAR_SLACK}x those at "
          f"{smallest:,} accounts.")


def moto_cpu():
    """A full plan of MOTO_ACCOUNTS accounts in moto (applied, so every pointer is read) and
    its floor; returns [(what, wall, MiB, CPU s)]."""
    work = tempfile.mkdtemp(prefix="fleetgate-scale-moto-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS="false"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        env = dict(
            base_env(work),
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.path.join(work, "no-config"),
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "no-credentials"),
        )
        env.pop("AWS_PROFILE", None)
        config = os.path.join(work, "config")
        generate(config, MOTO_ACCOUNTS)
        common = ["--repo", config, "--target", "aws", "--endpoint-url", endpoint]
        print(f"\n{MOTO_ACCOUNTS} accounts in moto at {endpoint}; setting up...", flush=True)
        for args in (["bootstrap"], ["apply", "--all-at-once"]):
            wall, _, _ = timed([FLEETGATE, *args, *common], env, (0,))
            print(f"  {args[0]}: {wall:.1f}s", flush=True)
        rows = []
        wall, mib, cpu = timed([FLEETGATE, "plan", *common], env, (0,))
        rows.append(("fleetgate plan --target aws (full, no change)", wall, mib, cpu))
        out = os.path.join(work, "floor.json")
        wall, mib, cpu = timed([FLOOR, config, endpoint, "32"], env, (0,), out)
        with open(out) as f:
            floor = json.load(f)
        if floor["ok"] != MOTO_ACCOUNTS:
            sys.exit(f"floor failed: {floor}")
        rows.append(("floor: aws_floor (AssumeRole + GetObject)", wall, mib, cpu))
        return rows
    finally:
        moto.terminate()
        moto.wait()
        subprocess.run(["rm", "-rf", work])


def moto_table(rows):
    print()
    print(f"| {MOTO_ACCOUNTS:,} accounts in moto | seconds | peak MiB | CPU s (user+sys) "
          f"| CPU ms per account |")
    print("| --- | --: | --: | --: | --: |")
    for name, wall, mib, cpu in rows:
        print(f"| {name} | {wall:.2f} | {mib:.0f} | {cpu:.2f} "
              f"| {cpu / MOTO_ACCOUNTS * 1000:.2f} |")


def main():
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "1000 10000").split()]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    results = {}
    for run in range(1, runs + 1):
        for size in sizes:
            results[(size, run)] = one_size(size, run)
    if sizes:
        file_table(results, sizes)
    if os.environ.get("SCALE_MOTO") == "1":
        moto_table(moto_cpu())


if __name__ == "__main__":
    main()
