#!/usr/bin/env python3
"""Checks the Grafana dashboards of deploy/grafana/dashboards (scripts/lint-deploy runs it).

Static checks, on every dashboard:
  - it is JSON with schemaVersion 39, a title and a uid, and no other dashboard has that uid;
  - it has a variable `datasource` of type datasource (Prometheus), and every panel, target and
    query variable uses it (`${datasource}`), so the dashboard works with any data source name;
  - every panel (rows aside) has a title and at least one target with an expression;
  - every variable an expression uses is defined, or is one of Grafana's ($__rate_interval...);
  - every fleetgate metric an expression or a variable names is registered in the code
    (scripts/lint_deploy.py's registered_metrics()).

Live check: Prometheus (`--prometheus`, default `prometheus` on PATH) is started on a free
loopback port with a temporary TSDB. It scrapes, once a second, a sample of what the binaries
expose (SAMPLE_METRICS: one watch daemon, two gateways serving two accounts, and a gateway
that has never loaded a bundle), with the labels and values the metrics contract gives. Every
panel's expression, with the variables set to DEFAULT_VALUES, must then run without error and
return at least one series with a number (not NaN); so must each query variable's selector,
and its series must have the label the variable lists. A wrong label name or value in a panel
shows up here as a panel without data. Prometheus is stopped before the script exits.

Reusable: panel_queries(path), variable_queries(path), substitute(expr, values) and
sample_exposition(scrape) use the standard library only.

Usage: check_dashboards.py [--prometheus PATH] [--static-only] [DASHBOARD.json ...]
Exits 0 when everything is clean, 1 otherwise.
"""

import argparse
import glob
import http.server
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lint_deploy import is_registered, registered_metrics  # noqa: E402  (standard library only)

DASHBOARDS = "deploy/grafana/dashboards/*.json"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What the variables stand for when the expressions are checked: every value (the "All" of a
# multi-value variable is `.*`), and the windows Grafana would choose for a one-hour range.
DEFAULT_VALUES = {
    "account": ".*",
    "route": ".*",
    "instance": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
# Grafana's own variables, which dashboards use without defining them.
GRAFANA_VARIABLES = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__org", "__user",
}

# `$name`, `${name}`, `${name:format}` and `[[name]]`.
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", re.S)
METRIC = re.compile(r"\bfleetgate_[a-z0-9_]+")


def panels(dashboard):
    """Every panel of a dashboard, rows included, and the panels of collapsed rows."""
    for panel in dashboard.get("panels") or []:
        yield panel
        for inner in panel.get("panels") or []:
            yield inner


def panel_queries(path):
    """[(dashboard uid, panel title, expr)] for every target of every panel, in order."""
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                found.append((dashboard.get("uid"), panel.get("title"), target["expr"]))
    return found


def variable_queries(path):
    """[(dashboard uid, variable name, selector, label)] for every `label_values(selector,
    label)` query variable. A variable with `label_values(label)` alone has selector None."""
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    found = []
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        m = LABEL_VALUES.match(query or "")
        if m:
            found.append((dashboard.get("uid"), var.get("name"), m.group(1), m.group(2)))
        else:
            m = re.match(r"^\s*label_values\(\s*(\w+)\s*\)\s*$", query or "")
            found.append((dashboard.get("uid"), var.get("name"), None, m.group(1) if m else query))
    return found


def substitute(expr, values):
    """`expr` with every variable replaced by `values[name]`. Raises KeyError naming a variable
    that `values` lacks."""
    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise KeyError(name)
        return values[name]
    return VARIABLE.sub(value, expr)


def variables_used(text):
    return {m.group(1) or m.group(2) or m.group(3) for m in VARIABLE.finditer(text)}


def check_static(paths, known):
    problems = []
    uids = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                dashboard = json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: not JSON: {e}")
            continue
        uid = dashboard.get("uid")
        if not uid:
            problems.append(f"{path}: no uid")
        elif uid in uids:
            problems.append(f"{path}: uid {uid!r} is also the uid of {uids[uid]}")
        else:
            uids[uid] = path
        if not dashboard.get("title"):
            problems.append(f"{path}: no title")
        if dashboard.get("schemaVersion") != SCHEMA_VERSION:
            problems.append(f"{path}: schemaVersion {dashboard.get('schemaVersion')!r}, expected {SCHEMA_VERSION}")

        variables = (dashboard.get("templating") or {}).get("list") or []
        defined = {v.get("name") for v in variables}
        ds = [v for v in variables if v.get("name") == "datasource"]
        if not ds or ds[0].get("type") != "datasource" or ds[0].get("query") != "prometheus":
            problems.append(f"{path}: no variable `datasource` of type datasource with query prometheus")
        for var in variables:
            if var.get("type") == "query" and var.get("datasource") != DATASOURCE:
                problems.append(f"{path}: variable {var.get('name')}: datasource {var.get('datasource')!r}, expected {DATASOURCE}")
        for _, name, selector, label in variable_queries(path):
            if selector is None:
                problems.append(f"{path}: variable {name}: query {label!r} is not label_values(<selector>, <label>)")
                continue
            for metric in METRIC.findall(selector):
                if not is_registered(metric, known):
                    problems.append(f"{path}: variable {name}: no metric {metric} in the code")
            for used in variables_used(selector) - defined - GRAFANA_VARIABLES:
                problems.append(f"{path}: variable {name}: uses ${used}, which is not defined")

        ids = set()
        for panel in panels(dashboard):
            title = panel.get("title")
            where = f"{path}: panel {title!r}"
            if panel.get("id") in ids:
                problems.append(f"{where}: id {panel.get('id')} is used twice")
            ids.add(panel.get("id"))
            if panel.get("type") == "row":
                continue
            if not title:
                problems.append(f"{path}: panel {panel.get('id')}: no title")
            if panel.get("datasource") != DATASOURCE:
                problems.append(f"{where}: datasource {panel.get('datasource')!r}, expected {DATASOURCE}")
            targets = panel.get("targets") or []
            if not targets:
                problems.append(f"{where}: no targets")
            for target in targets:
                expr = target.get("expr")
                if not expr:
                    problems.append(f"{where}: target {target.get('refId')}: no expr")
                    continue
                if target.get("datasource", DATASOURCE) != DATASOURCE:
                    problems.append(f"{where}: target {target.get('refId')}: datasource {target.get('datasource')!r}, expected {DATASOURCE}")
                for used in variables_used(expr) - defined - GRAFANA_VARIABLES:
                    problems.append(f"{where}: uses ${used}, which is not defined")
                for metric in sorted(set(METRIC.findall(expr))):
                    if not is_registered(metric, known):
                        problems.append(f"{where}: no metric {metric} in the code")
    return problems


# ---------------------------------------------------------------------------------------------
# The sample the live check scrapes: the metrics contract, one value set per label.

RECONCILER = {"job": "fleetgate-reconciler", "instance": "fleetgate-reconciler-0:9400"}
GATEWAYS = [
    ({"job": "fleetgate-gateway", "instance": "10.0.1.1:9090"}, "acme-prod"),
    ({"job": "fleetgate-gateway", "instance": "10.0.1.2:9090"}, "globex-prod"),
    # Never loaded a bundle: not ready, no fleetgate_gateway_bundle series.
    ({"job": "fleetgate-gateway", "instance": "10.0.1.3:9090"}, None),
]
ROUTES = ["orders", "users", "-", "idp.token"]
BACKENDS = {"orders": "orders-svc", "users": "users-svc"}

# name: (type, {label: values}); histograms are listed by their base name.
SAMPLE_METRICS = {
    "reconciler": {
        "fleetgate_build_info": ("gauge", {"version": ["0.1.0"], "revision": ["0123456789ab"]}),
        "fleetgate_reconcile_duration_seconds": ("histogram", {"result": ["applied", "rolled_back", "no_change", "not_leader", "error", "preempted"]}),
        "fleetgate_rollouts_total": ("counter", {"result": ["succeeded", "rolled_back", "halted", "preempted"]}),
        "fleetgate_rollout_duration_seconds": ("histogram", {"result": ["succeeded", "rolled_back", "halted", "preempted"]}),
        "fleetgate_wave_duration_seconds": ("histogram", {"wave": ["canary", "early", "prod"], "result": ["succeeded", "failed", "preempted"]}),
        "fleetgate_account_rollbacks_total": ("counter", {}),
        "fleetgate_accounts": ("gauge", {"state": ["pending", "applied", "serving", "healthy", "failed", "rolled_back", "skipped", "conflict", "held"]}),
        "fleetgate_drift_accounts": ("gauge", {}),
        "fleetgate_drift_accounts_by_cause": ("gauge", {"cause": ["never_deployed", "tampered", "behind", "out_of_band", "unreachable", "orphaned"]}),
        "fleetgate_lease_held": ("gauge", {}),
        "fleetgate_lease_holder": ("gauge", {"holder": ["fleetgate-reconciler-0"]}),
        "fleetgate_webhooks_total": ("counter", {"result": ["accepted", "ignored", "bad_signature"]}),
        "fleetgate_aws_requests_total": ("counter", {"kind": ["calls", "retries", "throttled", "timed_out"]}),
        "fleetgate_notifications_total": ("counter", {"sink": ["ops-slack", "pager"], "result": ["delivered", "retried", "failed", "dropped", "deduplicated"]}),
        "fleetgate_notifications_queued": ("gauge", {}),
    },
    "gateway": {
        "fleetgate_gateway_build_info": ("gauge", {"version": ["0.1.0"], "revision": ["0123456789ab"]}),
        "fleetgate_gateway_ready": ("gauge", {}),
        "fleetgate_gateway_bundle_stale": ("gauge", {}),
        "fleetgate_gateway_reloads_total": ("counter", {}),
        "fleetgate_gateway_reload_failures_total": ("counter", {"kind": ["source", "bundle"]}),
        "fleetgate_gateway_http_requests_total": ("counter", {"route": ROUTES, "method": ["GET", "POST"], "status": ["2xx", "4xx", "5xx"]}),
        "fleetgate_gateway_http_request_duration_seconds": ("histogram", {"route": ROUTES, "status": ["2xx", "4xx", "5xx"]}),
        "fleetgate_gateway_upstream_requests_total": ("counter", {"route": list(BACKENDS)}),
        "fleetgate_gateway_upstream_errors_total": ("counter", {"route": list(BACKENDS), "kind": ["connect", "timeout", "protocol", "body_too_large", "part"]}),
        "fleetgate_gateway_upstream_duration_seconds": ("histogram", {"backend": list(BACKENDS.values())}),
        "fleetgate_gateway_rate_limited_total": ("counter", {"route": ["orders", "users"]}),
        "fleetgate_gateway_auth_rejected_total": ("counter", {"route": ["orders", "users"], "status": ["400", "401", "403", "503"]}),
        "fleetgate_gateway_client_errors_total": ("counter", {"route": ["orders", "users"], "kind": ["body_malformed", "body_incomplete", "body_timeout", "aborted"]}),
        "fleetgate_gateway_idp_token_requests_total": ("counter", {"client": ["web", "-"], "result": ["issued", "invalid_client", "invalid_request", "invalid_scope", "temporarily_unavailable", "too_many_requests", "unsupported_grant_type"]}),
        "fleetgate_gateway_upstream_pinned_connections": ("gauge", {}),
    },
}
BUCKETS = ["0.005", "0.05", "0.5", "5", "50", "500", "5000", "+Inf"]


def _label_sets(labels):
    sets = [{}]
    for name, values in labels.items():
        sets = [dict(s, **{name: v}) for s in sets for v in values]
    return sets


def _line(name, labels, value):
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value}"


def sample_exposition(scrape):
    """The sample as Prometheus text exposition, at the `scrape`-th scrape (0, 1, ...):
    counters and histograms grow with it, gauges stay. Every series carries `job` and
    `instance`, for a scrape with honor_labels."""
    lines = []

    def emit(name, kind, labels, base):
        for i, ls in enumerate(_label_sets(labels)):
            ls = dict(base, **ls)
            if name == "fleetgate_gateway_upstream_requests_total":
                ls["backend"] = BACKENDS[ls["route"]]
            if name == "fleetgate_gateway_upstream_errors_total":
                ls["backend"] = BACKENDS[ls["route"]]
            if kind == "counter":
                lines.append(_line(name, ls, (i + 1) * 10 * scrape))
            elif kind == "histogram":
                n = (i + 1) * 10 * scrape
                for j, le in enumerate(BUCKETS):
                    # Cumulative: a growing share of the observations in each bucket.
                    lines.append(_line(f"{name}_bucket", dict(ls, le=le), n * (j + 1) // len(BUCKETS)))
                lines.append(_line(f"{name}_sum", ls, n * 3))
                lines.append(_line(f"{name}_count", ls, n))
            elif name.endswith(("_ready", "_lease_held", "_build_info", "_lease_holder")):
                lines.append(_line(name, ls, 1))
            else:
                lines.append(_line(name, ls, i + 1))

    for name, (kind, labels) in SAMPLE_METRICS["reconciler"].items():
        emit(name, kind, labels, RECONCILER)
    for base, account in GATEWAYS:
        for name, (kind, labels) in SAMPLE_METRICS["gateway"].items():
            if account is None and name == "fleetgate_gateway_ready":
                lines.append(_line(name, base, 0))
                continue
            emit(name, kind, labels, base)
        if account is not None:
            lines.append(_line("fleetgate_gateway_bundle", dict(
                base, account=account, digest="sha256:" + "ab" * 32, commit="0123456789abcdef" * 2 + "01234567"), 1))
    return "\n".join(lines) + "\n"


class _Sample(http.server.BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = sample_exposition(_Sample.scrapes).encode()
        _Sample.scrapes += 1
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}


def _has_number(result):
    for series in result.get("data", {}).get("result", []):
        value = series.get("value", [None, "NaN"])[1]
        try:
            if not math.isnan(float(value)):
                return True
        except (TypeError, ValueError):
            pass
    return False


def check_live(paths, prometheus):
    problems = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sample)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="check-dashboards-")
    port = _free_port()
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: sample\n"
            "    honor_labels: true\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server.server_address[1]}']}}]\n"
        )
    log = open(os.path.join(tmp, "prometheus.log"), "w", encoding="utf-8")
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        # Ready, and four scrapes in: rate() over the 1m window has samples to work with.
        while True:
            if proc.poll() is not None:
                log.flush()
                with open(log.name, encoding="utf-8") as f:
                    return [f"{prometheus} exited with {proc.returncode}:\n{f.read()[-2000:]}"]
            if time.monotonic() > deadline:
                return [f"{prometheus}: not ready with four scrapes after 60 s (log: {log.name})"]
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as r:
                    ready = r.status == 200
            except (urllib.error.URLError, OSError):
                ready = False
            if ready and _Sample.scrapes >= 4:
                break
            time.sleep(0.25)
        # The last scrape must be in the TSDB before querying.
        time.sleep(1.5)
        checked = 0
        for path in paths:
            for uid, title, expr in panel_queries(path):
                checked += 1
                try:
                    query = substitute(expr, DEFAULT_VALUES)
                except KeyError as e:
                    problems.append(f"{path}: panel {title!r}: no value for ${e.args[0]} to check {expr}")
                    continue
                result = _query(base, query)
                if result.get("status") != "success":
                    problems.append(f"{path}: panel {title!r}: {result.get('error')}: {query}")
                elif not _has_number(result):
                    problems.append(f"{path}: panel {title!r}: no data from the sample: {query}")
            for uid, name, selector, label in variable_queries(path):
                if selector is None:
                    continue
                checked += 1
                try:
                    query = substitute(selector, DEFAULT_VALUES)
                except KeyError as e:
                    problems.append(f"{path}: variable {name}: no value for ${e.args[0]}")
                    continue
                result = _query(base, query)
                series = result.get("data", {}).get("result", [])
                if result.get("status") != "success":
                    problems.append(f"{path}: variable {name}: {result.get('error')}: {query}")
                elif not any(label in s.get("metric", {}) for s in series):
                    problems.append(f"{path}: variable {name}: no series of the sample has the label {label}: {query}")
        print(f"{checked} queries run against the sample on Prometheus")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.shutdown()
        server.server_close()
        if not problems:
            shutil.rmtree(tmp, ignore_errors=True)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="prometheus", help="the Prometheus server binary")
    parser.add_argument("--static-only", action="store_true", help="skip the live check")
    parser.add_argument("dashboards", nargs="*", help=f"default: {DASHBOARDS}")
    args = parser.parse_args()
    paths = args.dashboards or sorted(glob.glob(DASHBOARDS))
    if not paths:
        print(f"no dashboards ({DASHBOARDS})", file=sys.stderr)
        return 1
    known = registered_metrics()
    problems = [] if known else ["no metric registrations found under reconciler/src and gateway/src"]
    problems += check_static(paths, known)
    if not args.static_only:
        problems += check_live(paths, args.prometheus)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"{len(paths)} dashboards: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
