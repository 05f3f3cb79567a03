"""The body of bench/rollout.sh: `fleetgate watch` and `fleetgate rollback --to` on a fleet
of N accounts in moto, each against its floor, alternating in one run.

Run through bench/rollout.sh, which builds the binaries first.
"""

import hashlib
import hmac
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from fleet import FLEETGATE, FLOOR, free_port, run_rss

SECRET = b"bench-webhook-secret"

# Bakes of 0 s and no gateways (noGateway: skip): what is measured is the machinery (render,
# plan, CAS writes, wave order, one status read per account), not the bake times the fleet
# chooses. The waves keep the generated fleet's concurrency limits.
WAVES = """  stateBucket: fleetgate-bench-state
  waves:
    - name: canary
      select: {stages: [canary]}
      maxConcurrency: 2
      failureTolerance: 0
      bakeTime: 0s
      healthGate: {noGateway: skip}
    - name: early
      select: {stages: [early]}
      maxConcurrency: 8
      failureTolerance: 1
      bakeTime: 0s
      healthGate: {noGateway: skip}
    - name: prod
      select: {stages: [prod]}
      failureTolerance: "5%"
      bakeTime: 0s
      healthGate: {noGateway: skip}
  drift:"""


def git(config, *args):
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=config, check=True, stdout=subprocess.DEVNULL)


def head(config):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=config, check=True,
                          capture_output=True, text=True).stdout.strip()


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as r:
        return json.load(r)


def wait_applied(port, commit, proc, log, limit=1800):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"fleetgate watch exited {proc.returncode}:\n{open(log).read()[-3000:]}")
        try:
            s = status(port)
            if (s.get("last_applied") or {}).get("commit") == commit:
                return s
            rejected = s.get("rejected") or {}
            if rejected.get("commit") == commit:
                sys.exit(f"the rollout of {commit} was rolled back: {rejected}")
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{commit} not applied within {limit}s:\n{open(log).read()[-3000:]}")


def webhook(port, commit):
    body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=body, method="POST",
                                 headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sig,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 202:
            sys.exit(f"webhook answered {r.status}")


def main():
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="fleetgate-rollout-bench-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=dict(os.environ, MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS="false"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = None
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.path.join(work, "no-config"),
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "no-credentials"),
            FLEETGATE_CACHE_DIR=os.path.join(work, "cache"),
            FLEETGATE_APPLIED_BY="bench", CI="true", NO_COLOR="1",
        )
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_ENDPOINT_URL", None)
        config = os.path.join(work, "config")
        subprocess.run([FLEETGATE, "example-fleet", "--accounts", str(accounts), "--out", config],
                       check=True, stdout=subprocess.DEVNULL)
        fleet_yaml = os.path.join(config, "fleet.yaml")
        with open(fleet_yaml) as f:
            text = f.read()
        text, n = re.subn(r"  waves:\n.*?\n  drift:", WAVES, text, flags=re.S)
        assert n == 1, "the generated fleet.yaml has a waves: block"
        with open(fleet_yaml, "w") as f:
            f.write(text)
        git(config, "init", "-q", "-b", "main")
        git(config, "add", ".")
        git(config, "commit", "-q", "-m", "generated fleet")
        common = ["--repo", config, "--target", "aws", "--endpoint-url", endpoint]

        print(f"fleet of {accounts} accounts in moto at {endpoint}; setting up...", flush=True)
        for step in (["bootstrap"], ["apply", "--skip-health-gates"]):
            secs, _, code, _, err = run_rss([FLEETGATE] + step + common, env)
            if code != 0:
                sys.exit(f"{step} failed ({code}):\n{err.decode()[-2000:]}")
            print(f"  {step[0]}: {secs:.1f}s", flush=True)
        # The hub's state bucket (the daemon's lease), with boto3 (moto depends on it).
        import boto3
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket="fleetgate-bench-state")

        secret = os.path.join(work, "secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        watch_port = free_port()
        log = os.path.join(work, "watch.log")
        daemon = subprocess.Popen(
            [FLEETGATE, "watch", "--repo", "file://" + config, "--branch", "main",
             "--target", "aws", "--endpoint-url", endpoint,
             "--listen", f"127.0.0.1:{watch_port}", "--poll-interval", "1h",
             "--drift-interval", "24h", "--webhook-secret-file", secret],
            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        c0 = head(config)
        secs = time.monotonic()
        wait_applied(watch_port, c0, daemon, log)
        print(f"  daemon's first pass (observe + drift check of the fleet): "
              f"{time.monotonic() - secs:.1f}s", flush=True)

        def render():
            out = subprocess.run([FLEETGATE, "render", "--repo", config], check=True,
                                 capture_output=True, text=True).stdout
            return out

        roll, roll_floor, back, back_floor, back_blind = [], [], [], [], []
        previous_digests = render()
        previous = c0
        for i in range(runs):
            # A change to every account's bundle.
            path = os.path.join(config, "base/gateway.yaml")
            with open(path) as f:
                text = f.read()
            m = re.search(r"maxBodyBytes: (\d+)", text)
            text = text.replace(m.group(0), f"maxBodyBytes: {int(m.group(1)) + 1}", 1)
            with open(path, "w") as f:
                f.write(text)
            git(config, "commit", "-q", "-am", f"bench change {i}")
            commit = head(config)
            started = time.monotonic()
            webhook(watch_port, commit)
            s = wait_applied(watch_port, commit, daemon, log)
            secs = time.monotonic() - started
            changed = sum(1 for w in s["rollout"]["waves"] for a in w["accounts"].values()
                          if a["state"] == "healthy")
            roll.append(secs)

            # The floor of that rollout: the same writes, nothing else.
            bundles = os.path.join(work, f"bundles-{i}")
            subprocess.run([FLEETGATE, "render", "--repo", config, "--out", bundles], check=True,
                           stdout=subprocess.DEVNULL)
            digests = render()
            _, _, code, out, err = run_rss([FLOOR, config, endpoint, "32", "--apply", bundles], env)
            floor = json.loads(out)
            if code != 0 or floor["ok"] != accounts:
                sys.exit(f"floor failed: {out.decode()} {err.decode()[-2000:]}")
            roll_floor.append(floor["seconds"])

            # Full-fleet rollback to the previous commit, and its floor.
            secs_back, _, code, out, err = run_rss(
                [FLEETGATE, "rollback", "--to", previous, "--branch", "main"] + common, env)
            if code != 0:
                sys.exit(f"rollback failed ({code}):\n{out.decode()}\n{err.decode()[-2000:]}")
            back.append(secs_back)
            points = os.path.join(work, f"points-{i}")
            with open(points, "w") as f:
                f.write(previous_digests)
            _, _, code, out, err = run_rss([FLOOR, config, endpoint, "32", "--point", points], env)
            floor_back = json.loads(out)
            if code != 0 or floor_back["ok"] != accounts:
                sys.exit(f"floor failed: {out.decode()} {err.decode()[-2000:]}")
            back_floor.append(floor_back["seconds"])
            _, _, code, out, err = run_rss(
                [FLOOR, config, endpoint, "32", "--point-unchecked", points], env)
            blind = json.loads(out)
            if code != 0 or blind["ok"] != accounts:
                sys.exit(f"floor failed: {out.decode()} {err.decode()[-2000:]}")
            back_blind.append(blind["seconds"])
            print(f"  run {i + 1}: watch rollout {secs:.1f}s ({changed} accounts), "
                  f"floor {floor['seconds']:.1f}s; rollback --to {secs_back:.1f}s, "
                  f"floor {floor_back['seconds']:.1f}s (unchecked {blind['seconds']:.1f}s)",
                  flush=True)
            previous, previous_digests = commit, digests

        med = statistics.median
        print()
        print(f"{accounts} accounts, medians of {runs} (seconds):")
        print(f"  commit -> every pointer moved (fleetgate watch, webhook): {med(roll):6.1f}   "
              f"runs {', '.join(f'{x:.1f}' for x in roll)}")
        print(f"  floor: AssumeRole + GetObject + 2 PutObject per account:  {med(roll_floor):6.1f}   "
              f"runs {', '.join(f'{x:.1f}' for x in roll_floor)}")
        print(f"  rollout beyond the floor: {med(roll) - med(roll_floor):.1f}s (goal < 60s), "
              f"ratio {med(roll) / med(roll_floor):.2f}x")
        print(f"  fleetgate rollback --to, whole fleet:                      {med(back):6.1f}   "
              f"runs {', '.join(f'{x:.1f}' for x in back)}")
        print(f"  floor: AssumeRole + GET pointer + GET bundle (sha256) + PUT pointer: "
              f"{med(back_floor):6.1f}   runs {', '.join(f'{x:.1f}' for x in back_floor)}")
        print(f"  (unchecked: AssumeRole + GET pointer + PUT pointer:         {med(back_blind):6.1f}   "
              f"runs {', '.join(f'{x:.1f}' for x in back_blind)})")
        print(f"  rollback beyond the floor: {med(back) - med(back_floor):.1f}s (goal < 10s), "
              f"ratio {med(back) / med(back_floor):.2f}x")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait()
        moto.terminate()
        moto.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
