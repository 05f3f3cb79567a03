#!/usr/bin/env python3
"""The checks on deploy/ that no off-the-shelf linter here makes (scripts/lint-deploy runs it
after cfn-lint, kubernetes-validate, hadolint, check-jsonschema and yamllint).

GitHub workflows (deploy/github/workflows/*.yml), where actionlint cannot be installed:
  - every job has timeout-minutes;
  - every `uses:` is pinned to a major tag (owner/repo@vN) or is a local action (./...);
  - no `${{` inside a `run:` script (expressions reach scripts through env: only: script
    injection);
  - every `run:` script, with a bash shebang, is clean under `shellcheck -s bash -S style`.

Kubernetes (deploy/kubernetes/): kustomization.yaml lists exactly the manifests of the
directory.

Prometheus (deploy/prometheus/fleetgate-alerts.yaml), besides promtool's own checks:
  - every fleetgate metric an alert's expression names is one the code registers
    (reconciler/src, gateway/src), so alerts cannot silently watch nothing;
  - every alert has a severity (critical or warning), a component (reconciler or gateway, as
    its group) and a runbook_url whose anchor is a heading of docs/runbooks/alerts.md;
  - every alert has a firing and a silent case in fleetgate-alerts.test.yaml, and the tests
    name no alert the rules do not have (promtool passes those silently).

Alertmanager (deploy/alertmanager/alertmanager.yml): every alert name its inhibit rules match
is an alert of the rules file (amtool checks the rest).

All: every `fleetgate` / `fleetgate-gateway` invocation (a workflow script's command line,
a container's args) uses only subcommands and flags that the binaries' --help lists, so
deploy/ cannot drift from the CLI.

Usage: lint_deploy.py --shellcheck PATH --fleetgate BIN --gateway BIN
Exits 0 when everything is clean, 1 otherwise.
"""

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # scripts/check_dashboards.py imports this module with the standard library only
    yaml = None

PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@v[0-9]+$")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
SHELL_OPERATORS = {";", "|", "||", "&&", "&", ">", ">>", "<", "2>", "2>&1", ")"}


class Cli:
    """What a binary's --help says: its subcommands and each one's flags."""

    def __init__(self, binary):
        self.binary = binary
        self.cache = {}

    def flags(self, *subcommand):
        if subcommand not in self.cache:
            out = subprocess.run(
                [self.binary, *subcommand, "--help"],
                capture_output=True, text=True, check=False,
            )
            if out.returncode != 0:
                self.cache[subcommand] = None
            else:
                self.cache[subcommand] = set(FLAG.findall(out.stdout))
        return self.cache[subcommand]

    def check(self, words, where):
        """`words`: what follows the binary's name. Returns the problems."""
        sub = []
        if self.binary.endswith("fleetgate") and words and not words[0].startswith("-"):
            sub = [words[0]]
            words = words[1:]
        known = self.flags(*sub)
        if known is None:
            return [f"{where}: `{' '.join(['fleetgate', *sub])}` is not a command of {self.binary}"]
        problems = []
        for word in words:
            if word in SHELL_OPERATORS:
                break
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                if flag not in known:
                    name = " ".join([os.path.basename(self.binary), *sub])
                    problems.append(f"{where}: `{name}` has no flag {flag}")
        return problems


def steps_of(workflow):
    for job_id, job in (workflow.get("jobs") or {}).items():
        for i, step in enumerate(job.get("steps") or []):
            yield job_id, i, step


def shell_of(workflow, job, step):
    for scope in (step, (job.get("defaults") or {}).get("run") or {},
                  (workflow.get("defaults") or {}).get("run") or {}):
        if "shell" in scope:
            return scope["shell"]
    return "bash"  # GitHub's default on Linux runners


def invocations(script):
    """The word lists after each `fleetgate` command word (or the image's name, in `docker
    run`) in a shell script."""
    joined = re.sub(r"\\\n", " ", script)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("#") or "fleetgate" not in line.lower():
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            # The binary, or its image (docker run ... "$FLEETGATE_IMAGE" <subcommand> ...).
            # (`kubectl -n fleetgate exec` names a namespace, not the binary.)
            if i > 0 and words[i - 1] in ("-n", "--namespace"):
                continue
            if word in ("fleetgate", "$FLEETGATE_IMAGE") and i + 1 < len(words) and re.fullmatch(r"[a-z][a-z-]*", words[i + 1]):
                found.append(words[i + 1:])
    return found


def lint_workflow(path, shellcheck, fleetgate):
    problems = []
    with open(path, encoding="utf-8") as f:
        workflow = yaml.safe_load(f)
    jobs = workflow.get("jobs") or {}
    if not jobs:
        problems.append(f"{path}: no jobs")
    for job_id, job in jobs.items():
        if "timeout-minutes" not in job:
            problems.append(f"{path}: job {job_id}: no timeout-minutes")
    for job_id, i, step in steps_of(workflow):
        where = f"{path}: job {job_id}, step {i + 1} ({step.get('name', step.get('uses', 'run'))})"
        uses = step.get("uses")
        if uses is not None and not uses.startswith("./") and not PINNED.match(uses):
            problems.append(f"{where}: `uses: {uses}` is not pinned to a major tag (@vN)")
        script = step.get("run")
        if script is None:
            continue
        if "${{" in script:
            problems.append(f"{where}: `${{{{` inside run: pass expressions through env:")
        for words in invocations(script):
            problems.extend(fleetgate.check(words, where))
        shell = shell_of(workflow, jobs[job_id], step)
        if shell != "bash":
            problems.append(f"{where}: shell is {shell!r}, expected bash")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False, encoding="utf-8") as tmp:
            tmp.write("#!/usr/bin/env bash\n")
            tmp.write(script)
            name = tmp.name
        try:
            result = subprocess.run(
                [shellcheck, "-s", "bash", "-S", "style", name],
                capture_output=True, text=True, check=False,
            )
        finally:
            os.unlink(name)
        if result.returncode != 0:
            # Line numbers in the output are the script's + 1 (the shebang).
            output = (result.stdout + result.stderr).replace(name, "<run>")
            problems.append(f"{where}: shellcheck:\n{output}")
    return problems


def containers(doc):
    """Every container (and init container) of a workload manifest."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    pod = ((spec.get("template") or {}).get("spec") or {})
    return (pod.get("containers") or []) + (pod.get("initContainers") or [])


def lint_kubernetes(directory, fleetgate, gateway):
    problems = []
    manifests = sorted(
        os.path.basename(p)
        for p in glob.glob(os.path.join(directory, "*.yaml"))
        if os.path.basename(p) != "kustomization.yaml"
    )
    with open(os.path.join(directory, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    listed = sorted(kustomization.get("resources") or [])
    for name in sorted(set(manifests) - set(listed)):
        if not name.endswith(".example.yaml"):
            problems.append(f"{directory}/{name}: not listed in kustomization.yaml's resources")
    for name in sorted(set(listed) - set(manifests)):
        problems.append(f"{directory}/kustomization.yaml: lists {name}, which does not exist")
    for name in manifests:
        path = os.path.join(directory, name)
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            for c in containers(doc):
                where = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}, container {c.get('name')}"
                image = c.get("image", "")
                words = [str(w) for w in (c.get("command") or [])[1:] + (c.get("args") or [])]
                if "fleetgate-gateway" in image:
                    problems.extend(gateway.check(words, where))
                elif "fleetgate" in image:
                    problems.extend(fleetgate.check(words, where))
    return problems


# `registry.register("name", ...)` and `registry.register_with_unit("name", help, Unit::X, ...)`
# (prometheus-client appends the unit). Registries made with sub_registry_with_prefix are not
# understood: a metric registered in one is reported as missing.
# `registry.register("name", ...)`, and the catalog wrappers that call it:
# `metrics::register(registry, "name", ...)` (gateway) and
# `metrics::register(&mut registry, "fleetgate", "name", ...)` (reconciler: its prefix first).
REGISTER = re.compile(
    r'\bregister(?:_with_unit)?\(\s*(?:&mut\s+)?(?:registry\s*,\s*)?(?:"[a-z_]+"\s*,\s*(?="[a-z0-9_]+"\s*,\s*"))?'
    r'"([a-z0-9_]+)"(?:\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*Unit::([A-Za-z]+))?'
)
# What prometheus-client appends to a registered name in the exposition: counters' _total and
# _created, histograms' series.
EXPOSITION_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def registered_metrics():
    """The metric names the code registers with prometheus-client, with their prefixes."""
    names = set()
    for pattern, prefix in (("reconciler/src/**/*.rs", "fleetgate"), ("gateway/src/**/*.rs", "fleetgate_gateway")):
        for path in glob.glob(pattern, recursive=True):
            with open(path, encoding="utf-8") as f:
                for name, unit in REGISTER.findall(f.read()):
                    names.add(f"{prefix}_{name}" + (f"_{unit.lower()}" if unit else ""))
    return names


def is_registered(metric, known):
    """Whether `metric`, as a query names it (with _total, _bucket, ...), is one of `known`."""
    bases = {metric} | {metric[: -len(x)] for x in EXPOSITION_SUFFIXES if metric.endswith(x)}
    return bool(bases & known)


RUNBOOK = "docs/runbooks/alerts.md"
RUNBOOK_URL = "https://github.com/fleetgate/fleetgate/blob/main/" + RUNBOOK
SEVERITIES = {"critical", "warning"}
# Each rule group's component label (deploy/alertmanager's inhibit rules match on it).
COMPONENTS = {"fleetgate-reconciler": "reconciler", "fleetgate-gateway": "gateway"}


def github_anchors(path):
    """The anchors GitHub makes for a Markdown file's headings."""
    anchors = set()
    seen = {}
    in_code = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            if in_code:
                continue
            m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            anchor = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(anchor, 0)
            seen[anchor] = n + 1
            anchors.add(anchor if n == 0 else f"{anchor}-{n}")
    return anchors


def alert_rules(path):
    """(group name, rule) for every alerting rule of a rules file."""
    with open(path, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                yield group.get("name"), rule


def lint_alerts(rules_path, tests_path, runbook_path):
    problems = []
    known = registered_metrics()
    if not known:
        return ["no metric registrations found under reconciler/src and gateway/src"]
    with open(rules_path, encoding="utf-8") as f:
        groups = yaml.safe_load(f).get("groups") or []
    for group in groups:
        for rule in group.get("rules") or []:
            where = f"{rules_path}: {rule.get('alert') or rule.get('record')}"
            for metric in re.findall(r"\bfleetgate_[a-z0-9_]+", str(rule.get("expr", ""))):
                if not is_registered(metric, known):
                    problems.append(f"{where}: no metric {metric} in the code (registered: {', '.join(sorted(known))})")

    anchors = github_anchors(runbook_path) if os.path.exists(runbook_path) else set()
    if not anchors:
        problems.append(f"{runbook_path}: missing or without headings")
    alerts = {}
    for group, rule in alert_rules(rules_path):
        name = rule["alert"]
        where = f"{rules_path}: {name}"
        if name in alerts:
            problems.append(f"{where}: defined twice")
        alerts[name] = rule
        labels = rule.get("labels") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity {labels.get('severity')!r}, expected one of {sorted(SEVERITIES)}")
        if group in COMPONENTS and labels.get("component") != COMPONENTS[group]:
            problems.append(f"{where}: component {labels.get('component')!r}, expected {COMPONENTS[group]!r} (group {group})")
        elif group not in COMPONENTS:
            problems.append(f"{where}: group {group!r} is not one of {sorted(COMPONENTS)}")
        url = (rule.get("annotations") or {}).get("runbook_url", "")
        expected = f"{RUNBOOK_URL}#{name.lower()}"
        if url != expected:
            problems.append(f"{where}: runbook_url is {url!r}, expected {expected!r}")
        elif name.lower() not in anchors:
            problems.append(f"{where}: {runbook_path} has no heading `{name}` (anchor #{name.lower()})")

    with open(tests_path, encoding="utf-8") as f:
        tests = yaml.safe_load(f) or {}
    rule_files = [os.path.normpath(os.path.join(os.path.dirname(tests_path), r)) for r in tests.get("rule_files") or []]
    if os.path.normpath(rules_path) not in rule_files:
        problems.append(f"{tests_path}: rule_files does not list {rules_path}")
    firing, silent = set(), set()
    for test in tests.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            name = case.get("alertname")
            if name not in alerts:
                problems.append(f"{tests_path}: a case at {case.get('eval_time')} tests {name!r}, which is not an alert of {rules_path}")
            (firing if case.get("exp_alerts") else silent).add(name)
    for name in alerts:
        if name not in firing:
            problems.append(f"{tests_path}: no case where {name} fires")
        if name not in silent:
            problems.append(f"{tests_path}: no case where {name} stays silent")
    return problems


def lint_alertmanager(config_path, rules_path):
    """Every alertname an inhibit rule matches with = or != is an alert of the rules file, and
    every name in a regex (=~, !~) of alert names too."""
    problems = []
    alerts = {rule["alert"] for _, rule in alert_rules(rules_path)}
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for i, rule in enumerate(config.get("inhibit_rules") or [], 1):
        for matcher in (rule.get("source_matchers") or []) + (rule.get("target_matchers") or []):
            m = re.fullmatch(r'\s*alertname\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*', matcher)
            if not m:
                continue
            names = m.group(2).split("|") if "~" in m.group(1) else [m.group(2)]
            for name in names:
                if name not in alerts:
                    problems.append(f"{config_path}: inhibit rule {i} names {name}, which is not an alert of {rules_path}")
    return problems


def lint_runbooks(pattern, fleetgate):
    """Every `fleetgate` command line in the runbooks' shell blocks names a command and flags
    that exist: on-call copies them as they are."""
    problems = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for n, block in enumerate(re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, re.S), 1):
            lines = [l[2:] if l.startswith("$ ") else l for l in block.splitlines()]
            for words in invocations("\n".join(lines)):
                problems.extend(fleetgate.check(words, f"{path}: block {n}"))
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shellcheck", default="shellcheck")
    parser.add_argument("--fleetgate", required=True)
    parser.add_argument("--gateway", required=True)
    args = parser.parse_args()
    if yaml is None:
        print("PyYAML is required (scripts/lint-deploy installs it into target/deploy-lint)", file=sys.stderr)
        return 1
    fleetgate, gateway = Cli(args.fleetgate), Cli(args.gateway)
    workflows = sorted(glob.glob("deploy/github/workflows/*.yml"))
    if not workflows:
        print("no workflows under deploy/github/workflows", file=sys.stderr)
        return 1
    problems = []
    for path in workflows:
        problems.extend(lint_workflow(path, args.shellcheck, fleetgate))
    problems.extend(lint_kubernetes("deploy/kubernetes", fleetgate, gateway))
    problems.extend(lint_alerts("deploy/prometheus/fleetgate-alerts.yaml",
                                "deploy/prometheus/fleetgate-alerts.test.yaml", RUNBOOK))
    problems.extend(lint_alertmanager("deploy/alertmanager/alertmanager.yml",
                                      "deploy/prometheus/fleetgate-alerts.yaml"))
    problems.extend(lint_runbooks("docs/runbooks/*.md", fleetgate))
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"{len(workflows)} workflows, deploy/kubernetes, deploy/prometheus, deploy/alertmanager, docs/runbooks: "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
