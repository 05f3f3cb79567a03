"""The body of bench/fleet.sh: moto, a generated fleet, and three ways to read it.

Run through bench/fleet.sh, which builds the binaries first.
"""

import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLEETGATE = os.path.join(ROOT, "target/release/fleetgate")
FLOOR = os.path.join(ROOT, "target/release/examples/aws_floor")
LOOP_SAMPLE = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rss(cmd, env):
    """Runs cmd to completion; returns (seconds, peak RSS MiB, exit code, stdout, stderr)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return elapsed, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read()


def main():
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = tempfile.mkdtemp(prefix="fleetgate-bench-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto_env = dict(os.environ, MOTO_S3_ALLOW_CROSSACCOUNT_ACCESS="false")
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=moto_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/data.json", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        aws_config = os.path.join(work, "aws-config")
        with open(aws_config, "w") as f:
            f.write("[default]\ns3 =\n  addressing_style = path\n")
        env = dict(
            os.environ,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=aws_config,
            AWS_SHARED_CREDENTIALS_FILE=os.path.join(work, "no-credentials"),
            FLEETGATE_CACHE_DIR=os.path.join(work, "cache"),
            CI="true",
            NO_COLOR="1",
        )
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_ENDPOINT_URL", None)
        config = os.path.join(work, "config")
        subprocess.run([FLEETGATE, "example-fleet", "--accounts", str(accounts), "--out", config],
                       check=True, stdout=subprocess.DEVNULL)
        for args in (["init", "-q", "-b", "main"], ["add", "."],
                     ["-c", "user.name=bench", "-c", "user.email=bench@localhost",
                      "commit", "-q", "-m", "generated fleet"]):
            subprocess.run(["git", *args], cwd=config, check=True)
        fg = [FLEETGATE]
        common = ["--repo", config, "--target", "aws", "--endpoint-url", endpoint]

        print(f"fleet of {accounts} accounts in moto at {endpoint}; setting up...", flush=True)
        for step in ("bootstrap", "apply"):
            secs, rss, code, _, err = run_rss(fg + [step] + common, env)
            if code != 0:
                sys.exit(f"{step} failed ({code}):\n{err.decode()[-2000:]}")
            print(f"  {step}: {secs:.1f}s", flush=True)

        plan_secs, plan_rss, floor_secs = [], [], []
        for i in range(runs):
            # Alternate, so both see the same state of moto and the machine.
            secs, rss, code, _, err = run_rss(fg + ["plan"] + common + ["--out", os.devnull], env)
            if code != 0:
                sys.exit(f"plan exited {code} on an applied fleet:\n{err.decode()[-2000:]}")
            plan_secs.append(secs)
            plan_rss.append(rss)
            _, _, code, out, err = run_rss([FLOOR, config, endpoint, "32"], env)
            floor = json.loads(out)
            if code != 0 or floor["ok"] != accounts:
                sys.exit(f"floor failed: {out.decode()} {err.decode()[-2000:]}")
            floor_secs.append(floor["seconds"])
            print(f"  run {i + 1}: plan {secs:.2f}s ({rss:.0f} MiB), floor {floor['seconds']:.2f}s",
                  flush=True)

        # The loop a user would write, on a sample, scaled.
        lines = ["set -e"]
        with open(os.path.join(config, "fleet.yaml")) as f:
            fleet_text = f.read()
        role = "fleetgate-deployer"
        external = "fleetgate-saas-fleet"
        for line in fleet_text.splitlines():
            s = line.strip()
            if s.startswith("roleName:"):
                role = s.split(":", 1)[1].strip()
            if s.startswith("externalId:"):
                external = s.split(":", 1)[1].strip()
        names = sorted(os.listdir(os.path.join(config, "accounts")))[:LOOP_SAMPLE]
        for file in names:
            name = file.removesuffix(".yaml")
            account_id = region = None
            with open(os.path.join(config, "accounts", file)) as f:
                for line in f:
                    s = line.strip()
                    if s.startswith("accountId:"):
                        account_id = s.split(":", 1)[1].strip().strip('"')
                    if s.startswith("region:"):
                        region = s.split(":", 1)[1].strip()
            arn = f"arn:aws:iam::{account_id}:role/{role}"
            lines.append(
                f"read AK SK ST <<< $(aws sts assume-role --endpoint-url {endpoint} "
                f"--role-arn {arn} --role-session-name loop --external-id {external} "
                f"--query 'Credentials.[AccessKeyId,SecretAccessKey,SessionToken]' --output text)"
            )
            lines.append(
                f"AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_SESSION_TOKEN=$ST "
                f"aws s3 cp --endpoint-url {endpoint} --region {region} "
                f"s3://fleetgate-config-{account_id}/fleetgate/{name}/current.json - >/dev/null"
            )
        script = os.path.join(work, "loop.sh")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        loop_secs, _, code, _, err = run_rss(["bash", script], env)
        if code != 0:
            sys.exit(f"the awscli loop failed:\n{err.decode()[-2000:]}")
        loop_scaled = loop_secs * accounts / len(names)

        plan_median = statistics.median(plan_secs)
        floor_median = statistics.median(floor_secs)
        print()
        print(f"fleetgate plan --target aws, {accounts} accounts, full (median of {runs}): {plan_median:.2f}s")
        print(f"floor (AssumeRole + GetObject pointer, same SDK, concurrency 32):   {floor_median:.2f}s")
        print(f"awscli loop, {len(names)} accounts: {loop_secs:.1f}s, scaled to {accounts}: {loop_scaled:.0f}s")
        print(f"plan / floor:          {plan_median / floor_median:.2f}x   (goal <= 1.15x)")
        print(f"awscli loop / plan:    {loop_scaled / plan_median:.0f}x    (goal >= 50x)")
        print(f"plan peak RSS:         {max(plan_rss):.0f} MiB (goal < 150 MiB)")
    finally:
        moto.terminate()
        moto.wait()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
