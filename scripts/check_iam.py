#!/usr/bin/env python3
"""The IAM of deploy/aws/*.yaml, checked beyond what cfn-lint checks (scripts/lint-deploy runs
it): every IAM Resource and principal ARN uses ${AWS::Partition}; the trust and permission
documents, rendered for every combination of the templates' conditions, are valid JSON with
the expected statements (the reader and the planner can only read, the planner can never
reach the deployer, pull requests are trusted by the planner only, operators are trusted only
when OperatorPrincipalArns is set and only with sts:AssumeRole, session limits); every value
rendered passes its parameter's AllowedPattern; hub.yaml's rules refuse blank entries in
OperatorPrincipalArns and nothing else tried; and the workflows of deploy/github use the role
each job should, in a GitHub environment that is hub.yaml's GitHubEnvironment default, with
OIDC subjects that role trusts under the template's defaults.

Usage: check_iam.py deploy/aws/account.yaml deploy/aws/hub.yaml (with cfn-lint importable)."""
import itertools, json, re, sys
from cfnlint.decode import decode

PSEUDO = {"AWS::Partition": "aws-test", "AWS::AccountId": "111122223333",
          "AWS::Region": "eu-west-1", "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None}
SAMPLE = {  # parameters without defaults or with empty defaults that matter
    "HubAccountId": "999988887777", "GitHubRepo": "acme/fleet-config",
    "EksOidcProvider": "oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF",
    "KmsKeyArn": "arn:aws-test:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "SecretsKmsKeyArn": "arn:aws-test:kms:eu-west-1:111122223333:key/9999abcd-12ab-34cd-56ef-1234567890ab",
    "OrganizationId": "o-abcdefghij", "GitHubOidcProviderArn": "",
}
# hub.yaml's OperatorPrincipalArns when set: an IAM Identity Center role (with its path) and a user.
OPERATORS = ["arn:aws-test:iam::111122223333:role/aws-reserved/sso.amazonaws.com/"
             "AWSReservedSSO_FleetgateOperator_0123456789abcdef",
             "arn:aws-test:iam::444455556666:user/breakglass"]
NOVALUE = object()
failures = []

def fail(msg):
    if msg in failures:  # the same problem in another combination of conditions
        return
    failures.append(msg)
    print("FAIL:", msg)

class Ctx:
    def __init__(self, tpl, params, resources):
        self.tpl, self.params, self.resources = tpl, params, resources
        self.conds = {}
    def cond(self, name):
        if name not in self.conds:
            self.conds[name] = bool(self.ev(self.tpl["Conditions"][name]))
        return self.conds[name]
    def ref(self, name):
        if name in PSEUDO:
            return NOVALUE if name == "AWS::NoValue" else PSEUDO[name]
        if name in self.params:
            return self.params[name]
        if name in self.resources:
            return self.resources[name]
        raise KeyError(name)
    def sub(self, s, extra):
        def rep(m):
            k = m.group(1)
            if k.startswith("!"):
                return "${" + k[1:] + "}"
            if k in extra:
                return str(extra[k])
            if "." in k:
                return self.resources[k]
            return str(self.ref(k))
        return re.sub(r"\$\{([^}]+)\}", rep, s)
    def ev(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (k, v), = node.items()
                if k == "Ref":
                    return self.ref(v)
                if k == "Fn::If":
                    c, a, b = v
                    return self.ev(a if self.cond(c) else b)
                if k == "Fn::Equals":
                    a, b = (self.ev(x) for x in v)
                    return str(a) == str(b)
                if k == "Fn::Not":
                    return not self.ev(v[0])
                if k == "Fn::And":
                    return all(self.ev(x) for x in v)
                if k == "Fn::Or":
                    return any(self.ev(x) for x in v)
                if k == "Fn::Contains":  # Rules only
                    items, x = (self.ev(y) for y in v)
                    return str(x) in [str(i) for i in as_list(items)]
                if k == "Fn::EachMemberEquals":  # Rules only
                    items, x = (self.ev(y) for y in v)
                    return all(str(i) == str(x) for i in as_list(items))
                if k == "Fn::Join":
                    sep, items = v
                    items = self.ev(items)
                    return self.ev(sep).join(str(x) for x in as_list(items))
                if k == "Condition":
                    return self.cond(v)
                if k == "Fn::GetAtt":
                    name = v if isinstance(v, str) else ".".join(v)
                    return self.resources[name]
                if k == "Fn::Sub":
                    if isinstance(v, str):
                        return self.sub(v, {})
                    s, vars_ = v
                    return self.sub(s, {kk: self.ev(vv) for kk, vv in vars_.items()})
                if k.startswith("Fn::"):
                    raise NotImplementedError(k)
            out = {}
            for k, v in node.items():
                r = self.ev(v)
                if r is not NOVALUE:
                    out[k] = r
            return out
        if isinstance(node, list):
            return [r for r in (self.ev(x) for x in node) if r is not NOVALUE]
        return node

def statements(doc):
    st = doc["Statement"]
    return st if isinstance(st, list) else [st]

def as_list(x):
    return x if isinstance(x, list) else [x]

def check_raw_partition(path, tpl):
    """Every Resource / Principal ARN in IAM documents, unrendered: Sub strings must use
    ${AWS::Partition}; anything else must be a Ref to an ARN parameter or GetAtt."""
    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("Resource", "Federated", "AWS") and where:
                    for item in leaves(v):
                        check_leaf(item, f"{where}.{k}")
                walk(v, where)
        elif isinstance(node, list):
            for x in node:
                walk(x, where)
    def leaves(v):
        if isinstance(v, list):
            for x in v:
                yield from leaves(x)
        elif isinstance(v, dict) and "Fn::If" in v:
            yield from leaves(v["Fn::If"][1]); yield from leaves(v["Fn::If"][2])
        else:
            yield v
    def check_leaf(item, where):
        if isinstance(item, dict) and "Fn::Sub" in item:
            s = item["Fn::Sub"] if isinstance(item["Fn::Sub"], str) else item["Fn::Sub"][0]
            if s.startswith("arn:") and not s.startswith("arn:${AWS::Partition}:"):
                fail(f"{path} {where}: {s}")
            else:
                print(f"  ok {where}: {s}")
        elif isinstance(item, dict) and "Ref" in item:
            print(f"  ok {where}: Ref {item['Ref']} (ARN given by the operator, pattern-checked)")
        elif isinstance(item, dict) and "Fn::GetAtt" in item:
            print(f"  ok {where}: GetAtt {item['Fn::GetAtt']}")
        elif item == "*":
            print(f"  ok {where}: *")
        else:
            fail(f"{path} {where}: literal {item!r}")
    for name, res in tpl["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for pol in props.get("Policies", []):
                walk(pol["PolicyDocument"], f"{name}.{pol['PolicyName']}")
            walk(props["AssumeRolePolicyDocument"], f"{name}.trust")
        if res["Type"] == "AWS::S3::BucketPolicy":
            walk(props["PolicyDocument"], f"{name}")
    # no hard-coded partition anywhere except AllowedPattern regexes and the descriptions
    text = open(path).read()
    for i, line in enumerate(text.splitlines(), 1):
        if re.search(r"arn:aws[:-]", line) and "AllowedPattern" not in line:
            fail(f"{path}:{i}: hard-coded partition: {line.strip()}")

def parameters(path, tpl, over, sample=True):
    """The parameter values CloudFormation would resolve: defaults, then SAMPLE (unless
    `sample` is false: the template's own defaults), then `over`. A CommaDelimitedList is a
    list ("" is [""], as in CloudFormation). Every value must pass the AllowedPattern."""
    params = {k: str(v["Default"]) if "Default" in v else None for k, v in tpl["Parameters"].items()}
    if sample:
        params.update({k: v for k, v in SAMPLE.items() if k in params})
    params.update(over)
    for k, decl in tpl["Parameters"].items():
        if params[k] is None:
            continue
        values = [params[k]]
        if decl["Type"] == "CommaDelimitedList":
            values = params[k] = [x.strip() for x in params[k].split(",")]
        pattern = decl.get("AllowedPattern")
        for x in values:
            if pattern and not re.fullmatch(pattern, x):
                fail(f"{path}: {k}={x!r} does not match its AllowedPattern {pattern}")
            if "AllowedValues" in decl and x not in [str(a) for a in decl["AllowedValues"]]:
                fail(f"{path}: {k}={x!r} is not one of its AllowedValues")
    return params

def refused_by_rules(path, tpl, over, sample=True):
    """The AssertDescriptions of the template's Rules that these parameter values fail."""
    ctx = Ctx(tpl, parameters(path, tpl, over, sample), {})
    refused = []
    for rule in tpl.get("Rules", {}).values():
        if "RuleCondition" in rule and not ctx.ev(rule["RuleCondition"]):
            continue
        refused += [a["AssertDescription"] for a in rule["Assertions"] if not ctx.ev(a["Assert"])]
    return refused

def check_rendered(path, tpl, combos, sample=True):
    seen = 0
    for over in combos:
        params = parameters(path, tpl, over, sample)
        resources = {}
        for name, res in tpl["Resources"].items():
            resources[name] = {
                "AWS::S3::Bucket": f"bucket-{name.lower()}",
            }.get(res["Type"], f"ref-{name}")
            resources[f"{name}.Arn"] = {
                "AWS::S3::Bucket": f"arn:aws-test:s3:::bucket-{name.lower()}",
                "AWS::IAM::OIDCProvider":
                    "arn:aws-test:iam::111122223333:oidc-provider/token.actions.githubusercontent.com",
            }.get(res["Type"], f"arn:aws-test:x::111122223333:{name}")
        ctx = Ctx(tpl, params, resources)
        for name, res in tpl["Resources"].items():
            if "Condition" in res and not ctx.cond(res["Condition"]):
                continue
            if res["Type"] != "AWS::IAM::Role":
                continue
            props = ctx.ev(res["Properties"])
            trust = props["AssumeRolePolicyDocument"]
            if isinstance(trust, str):
                try:
                    trust = json.loads(trust)
                except json.JSONDecodeError as e:
                    fail(f"{path} {name} trust with {over}: invalid JSON: {e}\n{trust}")
                    continue
            docs = [("trust", trust)] + [(p["PolicyName"], p["PolicyDocument"]) for p in props["Policies"]]
            for label, doc in docs:
                assert doc["Version"] == "2012-10-17"
                for st in statements(doc):
                    for key in ("Resource",):
                        for r in as_list(st.get(key, [])):
                            if r != "*" and not r.startswith("arn:aws-test:"):
                                fail(f"{path} {name} {label} {st.get('Sid')}: {r}")
                    for r in as_list(st.get("Principal", {}).get("Federated", [])) + \
                            as_list(st.get("Principal", {}).get("AWS", [])):
                        if not r.startswith("arn:aws-test:"):
                            fail(f"{path} {name} {label} principal {r}")
            seen += 1
            yield over, name, trust, props
    print(f"  rendered {seen} role documents")

def trusted_subjects(path, tpl):
    """The GitHub OIDC sub patterns each role of hub.yaml trusts under the template's own
    defaults (only GitHubRepo, which has none, given): what a stack made with the documented
    create-stack command trusts."""
    roles = {}
    for over, name, trust, props in check_rendered(path, tpl, [{"GitHubRepo": SAMPLE["GitHubRepo"]}], sample=False):
        gh = [st for st in trust["Statement"] if st.get("Sid") == "GitHubActions"]
        roles[name] = [x for st in gh for x in
                       as_list(st["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"])]
    return roles

def string_like(pattern, value):
    """IAM's StringLike: * any run of characters, ? one character, case-sensitive."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value) is not None

def job_subjects(wf, doc, job, branch):
    """The sub claims a job's OIDC token can carry (GitHub's default format): the environment's
    when the job declares one, else one per event that starts the workflow."""
    environment = job.get("environment")
    if isinstance(environment, dict):
        environment = environment.get("name")
    if environment is not None:
        if "${{" in str(environment):
            fail(f"{wf}: environment {environment!r} is an expression: its subject cannot be checked")
        return [f"environment:{environment}"]
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    events = {on: None} if isinstance(on, str) else {e: None for e in on} if isinstance(on, list) else on
    subjects = []
    for event, spec in events.items():
        if event == "pull_request":
            subjects.append("pull_request")
        elif event == "push":
            branches = (spec or {}).get("branches")
            if not branches or any(set(b) & set("*?[!") for b in branches):
                fail(f"{wf}: push without a literal branches: filter")
            subjects += [f"ref:refs/heads/{b}" for b in branches or []]
        elif event in ("schedule", "workflow_dispatch"):
            # Scheduled runs run on the default branch; manual runs are to be started from it
            # (deploy/github/README.md). Both are assumed to be GitHubBranch.
            subjects.append(f"ref:refs/heads/{branch}")
        else:
            fail(f"{wf}: event {event!r}: which OIDC subject it gets is not known here")
    return subjects

def check_workflows(path, tpl):
    """hub.yaml against deploy/github/workflows: plan and drift assume the planner role and pass
    FLEETGATE_ROLE_NAME (the reader); apply assumes the hub role, does not pass it, and asks for
    a session no longer than the hub role's MaxSessionDuration. Every job's `environment:` (if
    any) is GitHubEnvironment's default, and the role the job assumes trusts, under the
    template's defaults, every OIDC subject the job can get (its environment's, or its events')."""
    import os, yaml
    wf_dir = os.path.join(os.path.dirname(path), "..", "github", "workflows")
    if not os.path.isdir(wf_dir):
        print("  (no workflows next to the templates)")
        return
    hub_max = tpl["Resources"]["HubRole"]["Properties"]["MaxSessionDuration"]
    planner_max = tpl["Resources"]["PlannerRole"]["Properties"]["MaxSessionDuration"]
    default_environment = tpl["Parameters"]["GitHubEnvironment"].get("Default", "")
    branch = tpl["Parameters"]["GitHubBranch"]["Default"]
    trusted = trusted_subjects(path, tpl)
    role_of_var = {"FLEETGATE_HUB_ROLE_ARN": "HubRole", "FLEETGATE_PLANNER_ROLE_ARN": "PlannerRole"}
    for wf, role_var, reader, limit in (("fleetgate-plan.yml", "FLEETGATE_PLANNER_ROLE_ARN", True, planner_max),
                                        ("fleetgate-drift.yml", "FLEETGATE_PLANNER_ROLE_ARN", True, planner_max),
                                        ("fleetgate-apply.yml", "FLEETGATE_HUB_ROLE_ARN", False, hub_max)):
        doc = yaml.safe_load(open(os.path.join(wf_dir, wf)))
        checked = []
        for job_id, job in doc["jobs"].items():
            creds = [st for st in job["steps"] if st.get("uses", "").startswith("aws-actions/configure-aws-credentials@")]
            if len(creds) != 1:
                fail(f"{wf}: {len(creds)} configure-aws-credentials steps"); continue
            w = creds[0]["with"]
            if w["role-to-assume"] != "${{ vars.%s }}" % role_var:
                fail(f"{wf}: role-to-assume {w['role-to-assume']}")
            duration = int(w.get("role-duration-seconds", 3600))
            if duration > limit:
                fail(f"{wf}: role-duration-seconds {duration} > MaxSessionDuration {limit}")
            env = job.get("env", {})
            runs = "\n".join(st.get("run", "") for st in job["steps"])
            if reader:
                if env.get("FLEETGATE_ROLE_NAME") != "${{ vars.FLEETGATE_READER_ROLE_NAME || 'fleetgate-reader' }}":
                    fail(f"{wf}: job env FLEETGATE_ROLE_NAME = {env.get('FLEETGATE_ROLE_NAME')!r}")
                if "-e FLEETGATE_ROLE_NAME" not in runs:
                    fail(f"{wf}: FLEETGATE_ROLE_NAME not passed into the container")
            else:
                if ("FLEETGATE_ROLE_NAME" in env or "-e FLEETGATE_ROLE_NAME" in runs
                        or "--role-name" in runs or "PLANNER" in w["role-to-assume"]):
                    fail(f"{wf}: apply must use fleet.yaml's roleName through the hub role")
            # Who the job's token says it is, and whether the role it asks for takes that.
            environment = job.get("environment")
            if isinstance(environment, dict):
                environment = environment.get("name")
            if environment is not None and environment != default_environment:
                fail(f"{wf}: job {job_id} runs in environment {environment!r}, but hub.yaml's "
                     f"GitHubEnvironment defaults to {default_environment!r}")
            m = re.fullmatch(r"\$\{\{ vars\.([A-Z0-9_]+) \}\}", w["role-to-assume"])
            role = role_of_var.get(m.group(1)) if m else None
            if role is None:
                fail(f"{wf}: job {job_id}: role-to-assume {w['role-to-assume']} is not a hub.yaml role variable")
                continue
            for subject in job_subjects(wf, doc, job, branch):
                sub = f"repo:{SAMPLE['GitHubRepo']}:{subject}"
                if not any(string_like(p, sub) for p in trusted[role]):
                    fail(f"{wf}: job {job_id} gets sub {sub}, which {role} ({m.group(1)}) does not trust "
                         f"with hub.yaml's defaults (it trusts {trusted[role]})")
                else:
                    checked.append(subject)
        print(f"  ok {wf}: {role_var}" + (", FLEETGATE_ROLE_NAME" if reader else "") + f", session <= {limit}s"
              + f"; subjects trusted: {', '.join(dict.fromkeys(checked))}")


def main():
    for path in sys.argv[1:]:
        print(path)
        tpl, matches = decode(path)
        if matches:
            fail(f"{path}: parse: {matches}")
            continue
        check_raw_partition(path, tpl)
        if path.endswith("account.yaml"):
            combos = [dict(GatewayPrincipal=g, KmsKeyArn=k, SecretsKmsKeyArn=s, AllowBootstrap=b)
                      for g in ("eks-irsa", "eks-pod-identity", "ecs", "ec2")
                      for k in ("", SAMPLE["KmsKeyArn"])
                      for s in ("", SAMPLE["SecretsKmsKeyArn"])
                      for b in ("true", "false")]
            for over, name, trust, props in check_rendered(path, tpl, combos):
                sids = [st.get("Sid") for p in props["Policies"] for st in statements(p["PolicyDocument"])]
                if name == "DeployerRole":
                    assert ("BucketKeyThroughS3" in sids) == bool(over["KmsKeyArn"]), sids
                    assert ("BootstrapOnly" in sids) == (over["AllowBootstrap"] == "true"), sids
                    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == "fleetgate-saas-fleet"
                if name == "ReaderRole":
                    assert props["RoleName"] == "fleetgate-reader"
                    assert props["MaxSessionDuration"] == 3600
                    assert len(trust["Statement"]) == 1, trust
                    st = trust["Statement"][0]
                    assert st["Principal"] == {"AWS": "arn:aws-test:iam::999988887777:role/fleetgate-planner"}, st
                    assert st["Action"] == "sts:AssumeRole"
                    assert st["Condition"] == {"StringEquals": {"sts:ExternalId": "fleetgate-saas-fleet"}}, st
                    assert len(props["Policies"]) == 1
                    stmts = statements(props["Policies"][0]["PolicyDocument"])
                    actions = sorted(a for x in stmts for a in as_list(x["Action"]))
                    want = ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions"]
                    if over["KmsKeyArn"]:
                        want.append("kms:Decrypt")
                    assert actions == sorted(want), actions
                    assert all(x["Effect"] == "Allow" for x in stmts)
                    by_sid = {x["Sid"]: x for x in stmts}
                    assert by_sid["ReadPointersAndBundles"]["Resource"] == \
                        "arn:aws-test:s3:::bucket-configbucket/fleetgate/*", by_sid
                    assert by_sid["ListForNotFoundAndHistory"]["Resource"] == \
                        "arn:aws-test:s3:::bucket-configbucket", by_sid
                    assert "Condition" not in by_sid["ListForNotFoundAndHistory"]
                    if over["KmsKeyArn"]:
                        k = by_sid["BucketKeyThroughS3"]
                        assert k["Resource"] == over["KmsKeyArn"]
                        assert k["Condition"] == {"StringEquals": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}}
                    assert not any(a.startswith(("s3:Put", "s3:Delete", "s3:Create")) for a in actions)
                if name == "GatewayRole":
                    st = trust["Statement"][0]
                    if over["GatewayPrincipal"] == "eks-irsa":
                        p = SAMPLE["EksOidcProvider"]
                        assert st["Principal"]["Federated"].endswith(":oidc-provider/" + p), st
                        assert st["Condition"]["StringEquals"] == {
                            f"{p}:sub": "system:serviceaccount:fleetgate:fleetgate-gateway",
                            f"{p}:aud": "sts.amazonaws.com"}, st
                    elif over["GatewayPrincipal"] == "eks-pod-identity":
                        assert st["Principal"]["Service"] == "pods.eks.amazonaws.com"
                        assert st["Action"] == ["sts:AssumeRole", "sts:TagSession"]
                        assert st["Condition"]["StringEquals"] == {
                            "aws:RequestTag/kubernetes-namespace": "fleetgate",
                            "aws:RequestTag/kubernetes-service-account": "fleetgate-gateway"}, st
                    elif over["GatewayPrincipal"] == "ecs":
                        assert st["Principal"]["Service"] == "ecs-tasks.amazonaws.com"
                    else:
                        assert st["Principal"]["Service"] == "ec2.amazonaws.com"
                    assert ("SecretsKeyThroughSecretsManager" in sids) == bool(over["SecretsKmsKeyArn"]), sids
            if not failures:
                print("  example eks-irsa gateway trust + deployer policy with KMS:")
                for over, name, trust, props in check_rendered(path, tpl, [dict(
                        GatewayPrincipal="eks-irsa", KmsKeyArn=SAMPLE["KmsKeyArn"], AllowBootstrap="false")]):
                    print(json.dumps({"role": name, "trust": trust, "policies": props["Policies"]}, indent=1))
        else:
            combos = [dict(GitHubOidcProviderArn=o, GitHubEnvironment=e, AllowPullRequestPlans=pr,
                           EksOidcProvider=k, OrganizationId=org, OperatorPrincipalArns=ops)
                      for o in ("", "arn:aws-test:iam::111122223333:oidc-provider/token.actions.githubusercontent.com")
                      for e in ("", "production") for pr in ("true", "false")
                      for k in ("", SAMPLE["EksOidcProvider"]) for org in ("", "o-abcdefghij")
                      for ops in ("", ",".join(OPERATORS), OPERATORS[0])]
            roles_seen = set()
            for over, name, trust, props in check_rendered(path, tpl, combos):
                roles_seen.add(name)
                gh = trust["Statement"][0]
                provider = (over["GitHubOidcProviderArn"] or
                            "arn:aws-test:iam::111122223333:oidc-provider/token.actions.githubusercontent.com")
                assert gh["Principal"] == {"Federated": provider}, gh
                assert gh["Action"] == "sts:AssumeRoleWithWebIdentity"
                subs = gh["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"]
                want = ["repo:acme/fleet-config:ref:refs/heads/main"]
                if name == "HubRole":
                    # apply (branch, environment) and nothing a pull request can get
                    if over["GitHubEnvironment"]:
                        want.append("repo:acme/fleet-config:environment:production")
                    want_sa = "system:serviceaccount:fleetgate:fleetgate-reconciler"
                    assert props["MaxSessionDuration"] == 14400, props["MaxSessionDuration"]
                else:
                    assert name == "PlannerRole", name
                    # PR plans and drift: never the environment
                    if over["AllowPullRequestPlans"] == "true":
                        want.append("repo:acme/fleet-config:pull_request")
                    want_sa = "system:serviceaccount:fleetgate:fleetgate-drift"
                    assert props["MaxSessionDuration"] == 3600, props["MaxSessionDuration"]
                assert subs == want, (name, subs, want)
                assert not any(":pull_request" in x for x in subs) or name == "PlannerRole"
                assert gh["Condition"]["StringEquals"] == {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
                sids = [st.get("Sid") for st in trust["Statement"]]
                want_sids = ["GitHubActions"]
                if over["EksOidcProvider"]:
                    want_sids.append("ReconcilerPods" if name == "HubRole" else "DriftPods")
                if over["OperatorPrincipalArns"]:
                    want_sids.append("Operators")
                assert sids == want_sids, (name, over, sids)
                # Operators (break-glass): only when OperatorPrincipalArns is set, exactly those
                # principals, sts:AssumeRole and nothing else, on both roles.
                ops = [st for st in trust["Statement"] if st.get("Sid") == "Operators"]
                if over["OperatorPrincipalArns"]:
                    op, = ops
                    assert op == {"Sid": "Operators", "Effect": "Allow",
                                  "Principal": {"AWS": over["OperatorPrincipalArns"].split(",")},
                                  "Action": "sts:AssumeRole"}, (name, op)
                else:
                    assert not ops, (name, ops)
                for st in trust["Statement"]:
                    if "AWS" in st.get("Principal", {}):
                        assert st.get("Sid") == "Operators", (name, st)
                    assert st["Effect"] == "Allow" and "NotPrincipal" not in st and "NotAction" not in st, st
                    assert st["Principal"] != "*" and "*" not in as_list(st["Principal"].get("AWS", [])), st
                if over["EksOidcProvider"]:
                    p = over["EksOidcProvider"]
                    eks = trust["Statement"][1]
                    assert eks["Principal"] == {"Federated": f"arn:aws-test:iam::111122223333:oidc-provider/{p}"}, eks
                    assert eks["Action"] == "sts:AssumeRoleWithWebIdentity"
                    c = eks["Condition"]["StringEquals"]
                    assert c == {f"{p}:aud": "sts.amazonaws.com", f"{p}:sub": [want_sa]}, (name, c)
                stmts = statements(props["Policies"][0]["PolicyDocument"])
                st = stmts[0]
                assert ("Condition" in st) == bool(over["OrganizationId"]), st
                if over["OrganizationId"]:
                    assert st["Condition"] == {"StringEquals": {"aws:ResourceOrgID": "o-abcdefghij"}}, st
                sts_allowed = [x["Resource"] for x in stmts if x["Effect"] == "Allow"
                               and any(a.startswith("sts:") for a in as_list(x["Action"]))]
                if name == "HubRole":
                    assert sts_allowed == ["arn:aws-test:iam::*:role/fleetgate-deployer"], sts_allowed
                else:
                    # only sts:AssumeRole on the reader; an explicit Deny on the deployer
                    assert len(stmts) == 2, stmts
                    assert stmts[0]["Effect"] == "Allow" and stmts[0]["Action"] == "sts:AssumeRole"
                    assert sts_allowed == ["arn:aws-test:iam::*:role/fleetgate-reader"], sts_allowed
                    assert stmts[1] == {"Sid": "NeverTheDeployer", "Effect": "Deny", "Action": "sts:AssumeRole",
                                        "Resource": "arn:aws-test:iam::*:role/fleetgate-deployer"}, stmts[1]
            assert roles_seen == {"HubRole", "PlannerRole"}, roles_seen
            # OperatorPrincipalArns: "" (none) and lists of ARNs pass the rules; a list with a
            # blank entry does not (it would be an empty principal in the trust policies).
            for ops, ok in (("", True), (OPERATORS[0], True), (",".join(OPERATORS), True),
                            (OPERATORS[0] + ",", False), (OPERATORS[0] + ",," + OPERATORS[1], False)):
                refused = refused_by_rules(path, tpl, dict(combos[0], OperatorPrincipalArns=ops))
                if bool(refused) == ok:
                    fail(f"{path}: OperatorPrincipalArns={ops!r} is {'refused' if refused else 'accepted'} by the rules")
            print("  ok OperatorPrincipalArns: rules refuse blank entries only")
            check_workflows(path, tpl)
    print("FAILED" if failures else "all checks passed")
    sys.exit(1 if failures else 0)

main()
