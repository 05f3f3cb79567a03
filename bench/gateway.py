"""Driver of bench/gateway.sh: starts the backend and the four proxies on free loopback ports,
runs wrk against each in turn for ROUNDS rounds, prints medians and ratios. Stops everything
it started, whatever happens."""

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = os.path.join(ROOT, "tests", "fixtures", "keys")
GATEWAY = os.path.join(ROOT, "target", "release", "fleetgate-gateway")
BARE = os.path.join(ROOT, "target", "release", "examples", "bare_proxy")
HOST = "api.bench.example"
BODY = "x" * 512
# Where each process runs: every proxy on the second core (one is loaded at a time), wrk and
# the backend on the first, so every run and every row places them alike. Unpinned, where the
# scheduler put a proxy moved its figure by up to 30% from one run to the next.
# FLEETGATE_BENCH_UNPINNED=1 leaves placement to the scheduler (the figures before 2026-12-05).
if (os.cpu_count() or 1) >= 2 and os.environ.get("FLEETGATE_BENCH_UNPINNED") != "1":
    LOAD_CPU, PROXY_CPU = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
else:
    LOAD_CPU, PROXY_CPU = [], []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_token():
    header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "issuer-rsa"}).encode())
    claims = {"iss": "https://sso.bench.example", "aud": "https://" + HOST, "sub": "bench",
              "scope": "bench:read", "exp": int(time.time()) + 24 * 3600}
    payload = b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", os.path.join(KEYS, "issuer-rsa.pem")],
                         input=signing_input, capture_output=True, check=True).stdout
    return f"{header}.{payload}.{b64(sig)}"


def bundle(backend_port):
    jwk = json.load(open(os.path.join(KEYS, "jwks.json")))["issuer-rsa"]
    doc = {
        "apiVersion": "fleetgate.dev/bundle/v1",
        "account": {"name": "bench", "id": "123456789012", "region": "eu-west-1",
                    "stage": "prod", "tenant": "bench"},
        "gateway": {
            "hosts": [HOST],
            "backends": {"app": {"url": f"http://127.0.0.1:{backend_port}"}},
            "authPolicies": {"partner": {"issuers": ["bench-sso"]}},
            "routes": [
                {"name": "public", "methods": ["GET"], "path": "/public", "backend": "app",
                 "upstreamPath": "/", "public": True},
                {"name": "secured", "methods": ["GET"], "path": "/secured", "backend": "app",
                 "upstreamPath": "/", "auth": {"policy": "partner", "scopes": ["bench:read"]},
                 "rateLimit": {"requests": 100000000, "per": "1s", "key": "subject"}},
            ],
        },
        "idp": {"trustedIssuers": [{
            "name": "bench-sso", "issuer": "https://sso.bench.example", "jwks": {"keys": [jwk]},
            "audiences": ["https://" + HOST], "algorithms": ["RS256"]}]},
    }
    return json.dumps(doc).encode()


def deploy(directory, data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.join(directory, "bundles"), exist_ok=True)
    with open(os.path.join(directory, "bundles", f"{digest}.json"), "wb") as f:
        f.write(data)
    with open(os.path.join(directory, "current.json"), "w") as f:
        json.dump({"digest": f"sha256:{digest}", "commit": None, "applied_by": "bench",
                   "applied_at": "2026-11-24T00:00:00Z"}, f)


def nginx_conf(work, name, server_block):
    path = os.path.join(work, f"{name}.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fcgi;
  uwsgi_temp_path {work}/{name}-uwsgi;
  scgi_temp_path {work}/{name}-scgi;
  {server_block}
}}
""")
    return path


def backend_conf(work, port):
    """nginx as the backend: a fixed body of 512 bytes on every path."""
    return nginx_conf(work, "backend", f"""server {{
    listen 127.0.0.1:{port} reuseport;
    keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 '{BODY}'; }}
  }}""")


def proxy_conf(work, port, backend_port):
    """nginx as reverse proxy (row (b)), with upstream keepalive."""
    return nginx_conf(work, "proxy", f"""upstream app {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ proxy_pass http://app/; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}""")


def wait_ready(admin):
    """Waits for the gateway whose admin port is `admin` to say it is ready."""
    deadline = time.time() + 20
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready").status == 200:
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"the gateway on admin port {admin} did not become ready")
        time.sleep(0.1)


def stop(procs):
    """Stops every process of `procs`: SIGTERM, then SIGKILL after 10 s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def to_ms(value):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(f"cannot read wrk latency {value!r}")
    n, unit = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60_000}[unit]


def wrk(url, seconds, headers=(), prefix=()):
    """One wrk run (`prefix`: a command to run it under, e.g. taskset)."""
    cmd = [*prefix, "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", url]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        # Lines of the latency distribution only: "91.50%" in the thread stats ends in 50%.
        p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    except (AttributeError, ValueError) as e:
        raise SystemExit(f"{url}: cannot read wrk's output ({e}):\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx answers:\n{out}")
    return rps, p50, p99


def main():
    rounds, seconds = int(sys.argv[1]), int(sys.argv[2])
    work = tempfile.mkdtemp(prefix="fleetgate-bench-")
    procs = []
    try:
        ports = {k: free_port() for k in ("backend", "nginx", "haproxy", "gateway", "admin", "bare",
                                           "affinity")}
        backend = backend_conf(work, ports["backend"])
        proxy = proxy_conf(work, ports["nginx"], ports["backend"])
        haproxy_cfg = os.path.join(work, "haproxy.cfg")
        with open(haproxy_cfg, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{ports['haproxy']}
  default_backend be
backend be
  http-reuse always
  server app 127.0.0.1:{ports['backend']} maxconn 64
""")
        for conf, cpu in ((backend, LOAD_CPU), (proxy, PROXY_CPU)):
            procs.append(subprocess.Popen([*cpu, "nginx", "-p", work, "-c", conf, "-g", "daemon off;"],
                                          stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([*PROXY_CPU, "haproxy", "-f", haproxy_cfg, "-db"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        source = os.path.join(work, "fleet", "bench")
        deploy(source, bundle(ports["backend"]))
        # nginx and haproxy run with access logs off; so does the gateway (its other logs stay).
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", FLEETGATE_LOG="info,fleetgate::access=off")
        procs.append(subprocess.Popen([*PROXY_CPU, BARE, f"127.0.0.1:{ports['bare']}", f"http://127.0.0.1:{ports['backend']}"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen([*PROXY_CPU, BARE, f"127.0.0.1:{ports['affinity']}",
                                       f"http://127.0.0.1:{ports['backend']}", "--affinity"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        gw = subprocess.Popen([*PROXY_CPU, GATEWAY, "--source", f"file://{source}",
                               "--listen", f"127.0.0.1:{ports['gateway']}",
                               "--admin-listen", f"127.0.0.1:{ports['admin']}",
                               "--status-every", "0s"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gw)
        # Other builds of the gateway, side by side with this one on the same bundle:
        # FLEETGATE_BENCH_GATEWAYS="musl=/path/to/fleetgate-gateway,..." adds a (d) and an (e)
        # row for each (e.g. the static musl build of deploy/docker, or an earlier commit's).
        extra = []
        for item in filter(None, os.environ.get("FLEETGATE_BENCH_GATEWAYS", "").split(",")):
            label, path = item.split("=", 1)
            port, admin = free_port(), free_port()
            procs.append(subprocess.Popen([*PROXY_CPU, path, "--source", f"file://{source}",
                                           "--listen", f"127.0.0.1:{port}",
                                           "--admin-listen", f"127.0.0.1:{admin}",
                                           "--status-every", "0s"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            extra.append((label, port, admin))
        for p in ports.values():
            wait_port(p)
        for admin in [ports["admin"]] + [a for _, _, a in extra]:
            wait_ready(admin)
        time.sleep(1)
        idle = rss_kib(gw.pid)

        token = rs256_token()
        host = f"Host: {HOST}"
        rows = [
            ("(a) backend direct", f"http://127.0.0.1:{ports['backend']}/", ()),
            ("(b) nginx proxy", f"http://127.0.0.1:{ports['nginx']}/", ()),
            ("(c) haproxy", f"http://127.0.0.1:{ports['haproxy']}/", ()),
            ("(f) bare hyper proxy (the floor)", f"http://127.0.0.1:{ports['bare']}/", ()),
            ("(g) (f) + upstream conn affinity", f"http://127.0.0.1:{ports['affinity']}/", ()),
            ("(d) fleetgate-gateway", f"http://127.0.0.1:{ports['gateway']}/public", (host,)),
            ("(e) fleetgate + JWT + rate limit", f"http://127.0.0.1:{ports['gateway']}/secured",
             (host, f"Authorization: Bearer {token}")),
        ]
        for label, port, _ in extra:
            rows.append((f"(d) {label}", f"http://127.0.0.1:{port}/public", (host,)))
            rows.append((f"(e) {label}", f"http://127.0.0.1:{port}/secured",
                         (host, f"Authorization: Bearer {token}")))
        # Check every row answers 200 before measuring.
        for name, url, headers in rows:
            wrk(url, 1, headers, LOAD_CPU)
        results = {name: [] for name, _, _ in rows}
        for r in range(rounds):
            for name, url, headers in rows:
                results[name].append(wrk(url, seconds, headers, LOAD_CPU))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
        loaded = rss_kib(gw.pid)

        med = {name: tuple(statistics.median(x[i] for x in v) for i in range(3))
               for name, v in results.items()}
        base = med["(b) nginx proxy"]
        print(f"\nwrk -t1 -c32 -d{seconds}s --latency, {rounds} rounds, medians; {os.cpu_count()} cores, "
              "one worker per server, access logs off"
              + (", proxies on core 1, wrk and the backend on core 0" if PROXY_CPU else ", unpinned"))
        print(f"{'':34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'req/s vs (b)':>13} {'p99 vs (b)':>11}")
        for name, _, _ in rows:
            rps, p50, p99 = med[name]
            print(f"{name:34} {rps:10.0f} {p50:8.3f} {p99:8.3f} {rps / base[0]:12.2f}x {p99 / base[2]:10.2f}x")
        print(f"\nfleetgate-gateway RSS: idle {idle / 1024:.1f} MiB, after the load {loaded / 1024:.1f} MiB")
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
