"""The deployment role may do what CloudFormation does with it.

provision creates each release stack, and prune deletes it, with the
session of the deployment role (DeploymentRole in infra/template.yaml,
the role the phase functions assume): CloudFormation creates and deletes
every resource of the stack with that session's rights. AWS publishes, for
each resource type, the IAM actions its create and delete handlers need
(`handlers.create.permissions`, `handlers.delete.permissions` in the type's
resource schema; cfn-lint ships the schemas). porter never updates a
release stack, so update's are not asked for.

This checks, for every resource type a release stack holds (RENDERED_TYPES,
checked against crates/core/src/template.rs), every type a service's
stack_definition_path overlay may add to it (ADDABLE_TYPES, read from
crates/core/src/overlay.rs) and the parameter types the stack declares
(PARAMETER_TYPES), that each action those handlers need is allowed by an
Allow statement of the deployment role (its Action, with IAM's wildcards:
`ec2:Describe*`, `ec2:*`) and not denied outright (a Deny on "*" without a
condition), unless EXCLUSIONS says why porter does without it.
Actions only: resources and conditions are what each statement scopes (the
moto checks, scripts/inspect_infra.py, look at those).

A statement under Fn::If counts as allowing only when both branches allow
(a Deny under one counts as denying).

usage: check_handler_permissions.py [--template PATH] [--rust PATH] [--overlay PATH]
  --template  the SAM template (default infra/template.yaml)
  --rust      the renderer whose types are checked (default
              crates/core/src/template.rs)
  --overlay   the overlay checker whose ADDABLE_TYPES are checked (default
              crates/core/src/overlay.rs)
Run with .venv's python (cfn-lint's schemas and template decoder). Exits 1
listing each action missing (with its resource type and handler), each
type the renderer makes that RENDERED_TYPES lacks, and each stale
exclusion; 2 when the template, the schemas or overlay.rs's ADDABLE_TYPES
cannot be read.
"""

import argparse
import json
import re
import sys
from functools import lru_cache
from pathlib import Path

import cfnlint
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parent.parent

# The resource types of a release stack: what crates/core/src/template.rs
# renders (`render`: the instance role and its profile, the security group,
# the launch template, the Auto Scaling group). The types a
# stack_definition_path overlay may add beside them are read from
# crates/core/src/overlay.rs (ADDABLE_TYPES, the allow-list pack holds
# overlays to) and checked the same way; an overlay with any other type is
# refused before anything is built, so no other type gets rights here.
RENDERED_TYPES = [
    "AWS::IAM::Role",
    "AWS::IAM::InstanceProfile",
    "AWS::EC2::SecurityGroup",
    "AWS::EC2::LaunchTemplate",
    "AWS::AutoScaling::AutoScalingGroup",
]

# The template's parameter types (crates/core/src/template.rs, ImageId):
# CloudFormation checks an AWS-specific value and resolves an SSM one with
# the caller's rights, before any handler runs.
PARAMETER_TYPES = {
    "AWS::EC2::Image::Id": ["ec2:DescribeImages"],
    "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>": ["ssm:GetParameters"],
}

# What the handlers of those types may call that the deployment role is
# not given, and why. Each key is an action exactly as a schema spells it.
# A reason that says porter's group sets a property holds only while
# overlay.rs does not let an overlay set it on the group (its
# `own_properties`): MetricsCollection, which it does, is granted.
EXCLUSIONS = {
    # AWS::AutoScaling::AutoScalingGroup, create
    "autoscaling:PutNotificationConfiguration":
        "NotificationConfigurations: porter's group sets none, nor may an "
        "overlay; it would let a release stack publish the group's events to "
        "any topic",
    "cloudwatch:PutMetricAlarm":
        "porter's group sets no scaling policy or alarm; it would let a release "
        "stack (and its overlay) create or overwrite any alarm in the account, "
        "the rollout's alarm gate's among them",
    "ssm:Get*":
        "only for an image given as an SSM parameter inside the launch template; "
        "porter's template hands it a resolved image id (the ImageId parameter, "
        "read with ssm:GetParameters on AWS's public image parameters only). "
        "ssm:Get* on every parameter would let release stacks read the "
        "services' secrets under porter/",
    "vpc-lattice:RegisterTargets":
        "TrafficSources (VPC Lattice): porter's group sets none; promote puts "
        "instances behind the service's Classic ELBs itself, and registering "
        "targets here would put a release in front of traffic before promote",
    "vpc-lattice:DeregisterTargets":
        "TrafficSources (VPC Lattice): porter's group sets none",
    "vpc-lattice:GetTargetGroup":
        "TrafficSources (VPC Lattice): porter's group sets none",
    "vpc-lattice:ListTargets":
        "TrafficSources (VPC Lattice): porter's group sets none",
    # managed-fleets is no IAM service prefix (cfn-lint's list of IAM
    # actions has none, and no policy can grant one): the schema names it
    # for groups another service runs, which porter's never is.
    "managed-fleets:Get*": "not an IAM action; for groups another service manages",
    "managed-fleets:CreateAutoScalingGroup": "not an IAM action; for groups another service manages",
    "managed-fleets:UpdateAutoScalingGroup": "not an IAM action; for groups another service manages",
    "managed-fleets:DeleteAutoScalingGroup": "not an IAM action; for groups another service manages",
}

# The role the phase functions assume (RegionalPhasesPolicy's
# AssumeDeploymentRole names it by this parameter).
ROLE_NAME_PARAMETER = "DeploymentRoleName"
HANDLERS = ("create", "delete")


# ------------------------------------------------------------------ patterns


def _tokens(pattern):
    return [c.lower() if c not in "*?" else c for c in pattern]


@lru_cache(maxsize=None)
def covers(granted, required):
    """Every action `required` names (it may hold `*` or `?`) is one
    `granted` names: IAM's matching, case-insensitive, where a wildcard in
    `required` is covered only by a `*` of `granted`."""
    g, r = _tokens(granted), _tokens(required)

    @lru_cache(maxsize=None)
    def match(i, j):
        if i == len(g):
            return j == len(r)
        if g[i] == "*":
            return match(i + 1, j) or (j < len(r) and match(i, j + 1))
        if j == len(r):
            return False
        if g[i] == "?":
            return r[j] not in "*?" and match(i + 1, j + 1)
        return g[i] == r[j] and match(i + 1, j + 1)

    return match(0, 0)


# ------------------------------------------------------------------ schemas


def schemas_dir():
    return Path(cfnlint.__file__).parent / "data" / "schemas"


def load_schema(rtype):
    """A resource type's schema as cfn-lint ships it (us-east-1): an index
    of type -> file (cfn-lint 1.x), or one file per type (older)."""
    providers = schemas_dir() / "providers"
    index = providers / "us-east-1.json"
    if index.is_file():
        files = json.loads(index.read_text())
        if rtype not in files:
            raise LookupError(f"cfn-lint has no schema for {rtype}")
        path = schemas_dir() / "resources" / f"{files[rtype]}.json"
    else:
        path = providers / "us_east_1" / (rtype.lower().replace("::", "-") + ".json")
    if not path.is_file():
        raise LookupError(f"cfn-lint has no schema for {rtype} ({path})")
    return json.loads(path.read_text())


def handler_permissions(rtype):
    """{handler: [action]} for the create and delete handlers."""
    handlers = load_schema(rtype).get("handlers", {})
    out = {}
    for h in HANDLERS:
        if h not in handlers or "permissions" not in handlers[h]:
            raise LookupError(f"the {rtype} schema declares no {h} handler permissions")
        out[h] = list(handlers[h]["permissions"])
    return out


# ------------------------------------------------------------------ renderer


TYPE_LITERAL = re.compile(r'"(AWS::[A-Za-z0-9]+::[A-Za-z0-9]+(?:::[A-Za-z0-9]+)*(?:<[A-Za-z0-9:]+>)?)"')


def rendered_types(rust_path):
    """The `AWS::...` type literals of the renderer, its tests left out."""
    text = Path(rust_path).read_text()
    text = text.split("#[cfg(test)]", 1)[0]
    return sorted(set(TYPE_LITERAL.findall(text)))


# ------------------------------------------------------------------ overlays


ADDABLE = re.compile(r"\bconst\s+ADDABLE_TYPES\s*:\s*&\[&(?:'static\s+)?str\]\s*=\s*&\[(.*?)\];", re.S)
STRING_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
RESOURCE_TYPE = re.compile(r"AWS::[A-Za-z0-9]+::[A-Za-z0-9]+(?:::[A-Za-z0-9]+)*")


def addable_types(overlay_path):
    """overlay.rs's ADDABLE_TYPES, the resource types an overlay may add:
    the string literals of the constant's array, comments left out. Raises
    Unreadable when the constant is not there, holds no type, or holds
    something that is not one."""
    try:
        text = Path(overlay_path).read_text()
    except OSError as e:
        raise Unreadable(f"{overlay_path}: {e}") from e
    found = ADDABLE.findall(text)
    if len(found) != 1:
        raise Unreadable(
            f"{overlay_path}: expected one `const ADDABLE_TYPES: &[&str] = &[...];`, found {len(found)}; "
            "the overlay types cannot be checked without it"
        )
    body = re.sub(r"//[^\n]*|/\*.*?\*/", "", found[0], flags=re.S)
    types = STRING_LITERAL.findall(body)
    leftover = STRING_LITERAL.sub("", body).replace(",", "").strip()
    if leftover:
        raise Unreadable(f"{overlay_path}: ADDABLE_TYPES holds more than string literals ({leftover[:60]!r})")
    if not types:
        raise Unreadable(f"{overlay_path}: ADDABLE_TYPES lists no type")
    for t in types:
        if not RESOURCE_TYPE.fullmatch(t):
            raise Unreadable(f"{overlay_path}: ADDABLE_TYPES holds {t!r}, not a resource type")
    return types


# ------------------------------------------------------------------ template


class Unreadable(Exception):
    pass


def plain(node):
    """cfn-lint's nodes as plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    return node


def as_list(v):
    return v if isinstance(v, list) else [v]


def strings(node, where, allow):
    """The literal strings of an Action-like value. Under Fn::If, what both
    branches hold when allowing, what either holds when denying."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for n in node for s in strings(n, where, allow)]
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        _, a, b = node["Fn::If"]
        sa, sb = strings(a, where, allow), strings(b, where, allow)
        return [s for s in sa if s in sb] if allow else sa + sb
    if node == {"Ref": "AWS::NoValue"}:
        return []
    raise Unreadable(f"{where}: cannot read {json.dumps(node)} statically")


def statements(template, role_id):
    """(allow, deny) statements that apply to the role: its inline policies,
    and the template's managed and inline policies that name it. Each
    statement as (sid, actions, not_actions, resources, conditional)."""
    resources = template.get("Resources", {})
    docs = []
    role = resources[role_id]
    for i, p in enumerate(role.get("Properties", {}).get("Policies", [])):
        docs.append((f"{role_id}.Policies[{i}]", p.get("PolicyDocument", {})))
    attached = [a.get("Ref") for a in role.get("Properties", {}).get("ManagedPolicyArns", []) if isinstance(a, dict)]
    for lid, res in resources.items():
        if res.get("Type") not in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::IAM::RolePolicy"):
            continue
        props = res.get("Properties", {})
        roles = [r.get("Ref") if isinstance(r, dict) else r for r in as_list(props.get("Roles", []))]
        if props.get("RoleName") == {"Ref": role_id}:
            roles.append(role_id)
        if role_id in roles or lid in attached:
            docs.append((lid, props.get("PolicyDocument", {})))

    allow, deny = [], []

    def add(where, s, conditional):
        if not isinstance(s, dict) or s == {"Ref": "AWS::NoValue"}:
            return
        if list(s) == ["Fn::If"]:
            _, a, b = s["Fn::If"]
            add(where, a, True)
            add(where, b, True)
            return
        effect = s.get("Effect")
        sid = s.get("Sid", "(no Sid)")
        is_allow = effect == "Allow"
        entry = {
            "where": f"{where} {sid}",
            "actions": strings(s.get("Action", []), f"{where} {sid}", is_allow),
            "not_actions": strings(s.get("NotAction", []), f"{where} {sid}", not is_allow),
            "resources": s.get("Resource", s.get("NotResource")),
            "not_resource": "NotResource" in s,
            "condition": bool(s.get("Condition")),
            "conditional": conditional,
        }
        if is_allow:
            # A statement that one branch of a condition leaves out does not
            # always allow.
            if not conditional:
                allow.append(entry)
        elif effect == "Deny":
            deny.append(entry)
        else:
            raise Unreadable(f"{where} {sid}: Effect {effect!r}")

    for where, doc in docs:
        for s in as_list(doc.get("Statement", [])):
            add(where, s, False)
    return allow, deny


def deployment_role(template):
    """The logical id of the role whose name is the DeploymentRoleName
    parameter: the role the phase functions assume."""
    found = [
        lid for lid, res in template.get("Resources", {}).items()
        if res.get("Type") == "AWS::IAM::Role"
        and res.get("Properties", {}).get("RoleName") == {"Ref": ROLE_NAME_PARAMETER}
    ]
    if len(found) != 1:
        raise Unreadable(f"expected one AWS::IAM::Role named by {ROLE_NAME_PARAMETER}, found {found}")
    return found[0]


def allowed_by(action, allow):
    """The first Allow statement whose actions cover `action`, or None."""
    for s in allow:
        if s["not_actions"]:
            # NotAction: allows what it does not name, when it names none of it.
            if not any(covers(n, action) or covers(action, n) for n in s["not_actions"]):
                return s, "NotAction"
            continue
        for a in s["actions"]:
            if covers(a, action):
                return s, a
    return None


def denied_by(action, deny):
    """The Deny statement that takes `action` away everywhere and always."""
    for s in deny:
        everywhere = not s["not_resource"] and "*" in as_list(s["resources"])
        if s["condition"] or not everywhere:
            continue
        if s["not_actions"]:
            if not any(covers(n, action) or covers(action, n) for n in s["not_actions"]):
                return s
            continue
        if any(covers(d, action) for d in s["actions"]):
            return s
    return None


# ------------------------------------------------------------------ main


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--template", default=str(ROOT / "infra" / "template.yaml"))
    ap.add_argument("--rust", default=str(ROOT / "crates" / "core" / "src" / "template.rs"))
    ap.add_argument("--overlay", default=str(ROOT / "crates" / "core" / "src" / "overlay.rs"))
    args = ap.parse_args(argv)

    problems = []

    # The types the renderer makes are the ones listed here.
    literals = rendered_types(args.rust)
    for t in literals:
        if t not in RENDERED_TYPES and t not in PARAMETER_TYPES:
            problems.append(f"{args.rust} renders {t}, which RENDERED_TYPES (or PARAMETER_TYPES) does not list")
    for t in list(RENDERED_TYPES) + list(PARAMETER_TYPES):
        if t not in literals:
            problems.append(f"RENDERED_TYPES/PARAMETER_TYPES lists {t}, which {args.rust} no longer renders")

    try:
        template, errors = decode(args.template)
        if errors or template is None:
            raise Unreadable("; ".join(str(e) for e in errors) or "empty template")
        template = plain(template)
        role_id = deployment_role(template)
        allow, deny = statements(template, role_id)
        addable = addable_types(args.overlay)
        types = list(dict.fromkeys(RENDERED_TYPES + addable))
        required = {t: handler_permissions(t) for t in types}
    except (Unreadable, LookupError, OSError, ValueError) as e:
        print(f"check_handler_permissions: {e}", file=sys.stderr)
        return 2
    required.update({t: {"parameter": actions} for t, actions in PARAMETER_TYPES.items()})

    print(f"{args.template}: {role_id}, {len(allow)} Allow and {len(deny)} Deny statements")
    print(f"{args.overlay}: an overlay may add {', '.join(addable)}")
    needed = set()
    for rtype, handlers in required.items():
        for handler, actions in handlers.items():
            missing, excluded, ok = [], [], []
            for action in actions:
                needed.add(action)
                if action in EXCLUSIONS:
                    excluded.append(action)
                    continue
                hit = allowed_by(action, allow)
                if hit is None:
                    missing.append((action, "no Allow statement's Action covers it"))
                    continue
                d = denied_by(action, deny)
                if d is not None:
                    missing.append((action, f"denied outright by {d['where']}"))
                    continue
                ok.append(action)
            status = "ok     " if not missing else "MISSING"
            origin = " (overlay)" if rtype in addable and rtype not in RENDERED_TYPES else ""
            print(f"{status} {rtype}{origin} {handler}: {len(ok)} allowed, {len(excluded)} excluded, {len(missing)} missing")
            for action, why in missing:
                problems.append(f"{rtype} {handler} handler needs {action}: {why}")

    # An exclusion no handler asks for, or one the role grants anyway, says
    # something that is no longer so.
    for action in EXCLUSIONS:
        if action not in needed:
            problems.append(f"EXCLUSIONS lists {action}, which no create or delete handler of the checked types needs")
        elif allowed_by(action, allow) is not None:
            problems.append(f"EXCLUSIONS lists {action}, which {role_id} allows anyway ({allowed_by(action, allow)[0]['where']})")
    print(f"excluded, each for its reason in EXCLUSIONS: {', '.join(sorted(EXCLUSIONS))}")

    for p in problems:
        print(f"FAIL  {p}")
    if problems:
        print(f"check_handler_permissions: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check_handler_permissions: the deployment role may create and delete every resource of a release stack, "
          "and every type an overlay may add")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
