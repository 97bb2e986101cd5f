"""The CDK construct (infra/cdk) and the SAM template (infra/template.yaml)
must create the same stack. For each case of infra/cdk/test/parity-cases.json
this compares the SAM template, translated as check-infra translates it
(scripts/sam_to_cfn.py) and resolved with the case's parameters, with the
template the construct synthesized from the same values as props:

- resources: every resource on one side has exactly one on the other. The
  mapping is by name: the construct gives each resource the SAM logical id
  as its construct id (the last part of its aws:cdk:path). A resource
  without a partner, on either side, fails;
- the state machine definition, with its substitutions applied;
- IAM: every statement of every policy (roles' trust and inline policies,
  managed policies and what they attach to, bucket, key and topic
  policies, Lambda permissions), with actions, resources, principals and
  conditions in a normalized form;
- everything else each resource sets, and the outputs, but for the few
  differences listed in ALLOWED (each says why).

Both templates are brought to one form first: parameters, conditions and
pseudo parameters resolved to values, logical ids renamed to the SAM ones,
Fn::Sub and Fn::Join of the same string made one Fn::Join.

usage: check_cdk_parity.py TEMPLATE.yaml CASES.json CDK_DIR
  CDK_DIR holds CASE.template.json for each case (infra/cdk's
  `node dist/test/synth-cases.js CDK_DIR` writes them).
Run with .venv-sam's python (the translator). Exits 1 on any difference.
`--self-test` also breaks each side on purpose and checks the check fails.
"""

import copy
import json
import os
import re
import sys
import tempfile

PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "porter-serverless",
}
NOVALUE = object()

# What may differ, and why. Nothing about rights, names or behaviour.
ALLOWED = {
    # The code: SAM's stand-in object (sam_to_cfn.py) against CDK's asset.
    ("AWS::Lambda::Function", "Code"),
    # SAM tags what it creates as created by SAM; the construct does not.
    ("AWS::Lambda::Function", "Tags"),
    ("AWS::StepFunctions::StateMachine", "Tags"),
}
SAM_TAGS = [{"Key": "lambda:createdBy", "Value": "SAM"}, {"Key": "stateMachine:createdBy", "Value": "SAM"}]


class Resolver:
    """One template's intrinsics resolved as far as values allow: what is
    left is Ref and Fn::GetAtt of resources (renamed) inside Fn::Join."""

    def __init__(self, template, parameters, rename):
        self.template = template
        self.rename = rename
        self.params = {}
        for name, p in template.get("Parameters", {}).items():
            v = parameters.get(name, p.get("Default"))
            if v is None:
                continue
            if p["Type"] == "CommaDelimitedList":
                v = [] if v == "" else [x.strip() for x in str(v).split(",")]
            elif p["Type"] == "Number":
                v = int(v)
            self.params[name] = v
        self.conditions = {}
        for name, expr in template.get("Conditions", {}).items():
            self.conditions[name] = None
        for name in self.conditions:
            self.condition(name)

    def condition(self, name):
        if self.conditions.get(name) is None:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::NoValue":
            return NOVALUE
        if name in self.rename:
            return {"Ref": self.rename[name]}
        raise ValueError(f"Ref to unknown {name}")

    def getatt(self, lid, att):
        if lid not in self.rename:
            raise ValueError(f"GetAtt of unknown {lid}")
        return {"Fn::GetAtt": [self.rename[lid], att]}

    def value(self, node):
        if isinstance(node, list):
            out = [self.value(n) for n in node]
            return [v for v in out if v is not NOVALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (k, a), = node.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Condition":
                return self.condition(a)
            if k == "Fn::GetAtt":
                lid, att = a if isinstance(a, list) else a.split(".", 1)
                return self.getatt(lid, att)
            if k == "Fn::If":
                return self.value(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::Equals":
                return self.value(a[0]) == self.value(a[1])
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(x) for x in a)
            if k == "Fn::Or":
                return any(self.value(x) for x in a)
            if k == "Fn::Join":
                sep, items = a[0], self.value(a[1])
                if not isinstance(items, list):
                    raise ValueError(f"Fn::Join of {items!r}")
                parts = []
                for i, x in enumerate(items):
                    if i:
                        parts.append(sep)
                    parts.append(x)
                return joined(parts)
            if k == "Fn::Split":
                text = self.value(a[1])
                if not isinstance(text, str):
                    raise ValueError(f"Fn::Split of {text!r}")
                return text.split(a[0])
            if k == "Fn::Select":
                return self.value(a[1])[int(self.value(a[0]))]
            if k == "Fn::Sub":
                text, variables = (a, {}) if isinstance(a, str) else (a[0], a[1])
                variables = {n: self.value(v) for n, v in variables.items()}
                parts = []
                for piece in re.split(r"(\$\{[^}]*\})", text):
                    if not (piece.startswith("${") and piece.endswith("}")):
                        parts.append(piece)
                        continue
                    name = piece[2:-1]
                    if name.startswith("!"):
                        parts.append("${" + name[1:] + "}")
                    elif name in variables:
                        parts.append(variables[name])
                    elif "." in name and name.split(".", 1)[0] in self.rename:
                        parts.append(self.getatt(*name.split(".", 1)))
                    else:
                        parts.append(self.ref(name))
                return joined(parts)
            if k.startswith("Fn::"):
                raise ValueError(f"unhandled {k}")
        out = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NOVALUE}


def joined(parts):
    """Adjacent strings merged; a lone reference stands for itself."""
    out = []
    for p in parts:
        if isinstance(p, dict) and list(p) == ["Fn::Join"] and p["Fn::Join"][0] == "":
            sub = p["Fn::Join"][1]
        else:
            sub = [p]
        for q in sub:
            if isinstance(q, (int, float)) and not isinstance(q, bool):
                q = str(q)
            if isinstance(q, str) and out and isinstance(out[-1], str):
                out[-1] += q
            elif q != "":
                out.append(q)
    if not out:
        return ""
    if len(out) == 1:
        return out[0]
    return {"Fn::Join": ["", out]}


# ------------------------------------------------------------- normalizing


def canon(v):
    return json.dumps(v, sort_keys=True)


def as_list(v):
    return v if isinstance(v, list) else [v]


def statement(s):
    """A statement in one form: lists sorted, scalars as lists."""
    out = {}
    for k, v in s.items():
        if k in ("Action", "NotAction", "Resource", "NotResource"):
            out[k] = sorted(as_list(v), key=canon)
        elif k in ("Principal", "NotPrincipal") and isinstance(v, dict):
            out[k] = {pk: sorted(as_list(pv), key=canon) for pk, pv in v.items()}
        elif k == "Condition":
            out[k] = {op: {ck: sorted(as_list(cv), key=canon) for ck, cv in kv.items()} for op, kv in v.items()}
        else:
            out[k] = v
    return out


def policies(rtype, props):
    """(where, document) for every policy document a resource holds; the
    properties left once they are taken out."""
    props = copy.deepcopy(props)
    docs = []
    for key in ("AssumeRolePolicyDocument", "PolicyDocument", "KeyPolicy"):
        if key in props:
            docs.append((key, props.pop(key)))
    for p in props.pop("Policies", []) if rtype == "AWS::IAM::Role" else []:
        docs.append((f"Policies[{p.get('PolicyName')}]", p.get("PolicyDocument")))
    if rtype == "AWS::Lambda::Permission":
        # A resource policy statement on the function: all of it is IAM.
        docs.append(("Permission", {"Statement": [props]}))
        props = {}
    return docs, props


def statements(docs):
    out = {}
    for where, doc in docs:
        if not isinstance(doc, dict):
            out.setdefault(where, []).append(canon(doc))
            continue
        out[where] = sorted(canon(statement(s)) for s in as_list(doc.get("Statement", [])))
        rest = {k: v for k, v in doc.items() if k != "Statement"}
        if rest:
            out[where].append(canon({"document": rest}))
    return out


def definition(props, resolver_side):
    """The state machine's definition with its substitutions applied."""
    text = props.get("DefinitionString")
    if isinstance(text, dict) and "Fn::Join" in text:
        raise ValueError(f"{resolver_side}: the definition holds a reference outside its substitutions")
    if text is None:
        text = json.dumps(props.get("Definition"))
    for name, v in (props.get("DefinitionSubstitutions") or {}).items():
        if isinstance(v, dict) and list(v) == ["Fn::GetAtt"]:
            v = "<%s.%s>" % tuple(v["Fn::GetAtt"])
        elif isinstance(v, dict) and list(v) == ["Ref"]:
            v = "<%s>" % v["Ref"]
        text = text.replace("${%s}" % name, v if isinstance(v, str) else "<%s>" % canon(v).replace('"', "'"))
    return json.loads(text)


# --------------------------------------------------------------- comparing


def normalized(template, parameters, rename, side):
    r = Resolver(template, parameters, rename)
    out = {}
    for lid, res in template["Resources"].items():
        if "Condition" in res and not r.condition(res["Condition"]):
            continue
        key = rename[lid]
        if key in out:
            raise ValueError(f"{side}: two resources named {key}")
        out[key] = {
            "Type": res["Type"],
            "Properties": r.value(res.get("Properties", {})),
            "DeletionPolicy": res.get("DeletionPolicy", "Delete"),
            "UpdateReplacePolicy": res.get("UpdateReplacePolicy", "Delete"),
            "DependsOn": sorted(rename[d] for d in as_list(res.get("DependsOn", []))),
        }
    outputs = {rename.get(("output", k), k): r.value(o.get("Value")) for k, o in template.get("Outputs", {}).items()}
    return out, outputs


def cdk_names(template):
    """CDK logical id -> the SAM name: the last part of its construct path."""
    rename = {}
    for lid, res in template["Resources"].items():
        path = res.get("Metadata", {}).get("aws:cdk:path")
        if not path:
            raise ValueError(f"CDK resource {lid} has no aws:cdk:path")
        rename[lid] = path.rsplit("/", 1)[1]
    for lid in template.get("Outputs", {}):
        # Outputs carry no path; their id is the construct's path joined and
        # hashed, and the checks put the construct at the id Porter.
        m = re.fullmatch(r"Porter([A-Z][A-Za-z]+?)[0-9A-F]{8}", lid)
        rename[("output", lid)] = m.group(1) if m else lid
    return rename


def compare(sam, cdk):
    """Every difference, as lines."""
    (sres, sout), (cres, cout) = sam, cdk
    diffs = []
    for k in sorted(set(sres) - set(cres)):
        diffs.append(f"resource {k} ({sres[k]['Type']}): in SAM only")
    for k in sorted(set(cres) - set(sres)):
        diffs.append(f"resource {k} ({cres[k]['Type']}): in CDK only")
    for k in sorted(set(sres) & set(cres)):
        a, b = sres[k], cres[k]
        if a["Type"] != b["Type"]:
            diffs.append(f"resource {k}: type {a['Type']} (SAM) vs {b['Type']} (CDK)")
            continue
        t = a["Type"]
        for opt in ("DeletionPolicy", "UpdateReplacePolicy", "DependsOn"):
            if a[opt] != b[opt]:
                diffs.append(f"resource {k}: {opt} {a[opt]} (SAM) vs {b[opt]} (CDK)")
        adocs, aprops = policies(t, a["Properties"])
        bdocs, bprops = policies(t, b["Properties"])
        ast, bst = statements(adocs), statements(bdocs)
        for where in sorted(set(ast) | set(bst)):
            sa, sb = ast.get(where, []), bst.get(where, [])
            for s in sorted(set(sa) - set(sb)) + [x for x in set(sa) & set(sb) if sa.count(x) > sb.count(x)]:
                diffs.append(f"IAM {k} {where}: statement in SAM only: {s}")
            for s in sorted(set(sb) - set(sa)) + [x for x in set(sa) & set(sb) if sb.count(x) > sa.count(x)]:
                diffs.append(f"IAM {k} {where}: statement in CDK only: {s}")
        if t == "AWS::StepFunctions::StateMachine":
            if definition(aprops, "SAM") != definition(bprops, "CDK"):
                diffs.append(f"state machine {k}: the definitions differ after substitution")
            for p in ("DefinitionString", "Definition", "DefinitionSubstitutions"):
                aprops.pop(p, None)
                bprops.pop(p, None)
        for p in sorted(set(aprops) | set(bprops)):
            if (t, p) in ALLOWED:
                continue
            if canon(aprops.get(p)) != canon(bprops.get(p)):
                diffs.append(f"resource {k}: {p} differs: SAM {canon(aprops.get(p))[:300]} / CDK {canon(bprops.get(p))[:300]}")
        for t2, p in ALLOWED:
            # Allowed to differ only in what the entry says.
            if t2 == t and p == "Tags":
                extra = [x for x in aprops.get("Tags", []) if x not in SAM_TAGS]
                if extra != bprops.get("Tags", []):
                    diffs.append(f"resource {k}: Tags differ beyond SAM's own: {extra} / {bprops.get('Tags', [])}")
    for k in sorted(set(sout) | set(cout)):
        if canon(sout.get(k)) != canon(cout.get(k)):
            diffs.append(f"output {k}: SAM {canon(sout.get(k))} / CDK {canon(cout.get(k))}")
    return diffs


def sam_translated(template_path, parameters):
    # sam_to_cfn.py's translation, with its dummy code location.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sam_to_cfn

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "t.json")
        sam_to_cfn.main(template_path, "porter-parity-code", "code.zip", out)
        with open(out) as f:
            return json.load(f)


def sides(template_path, case, cdk_template):
    sam = sam_translated(template_path, case["parameters"])
    sam_names = {lid: lid for lid in sam["Resources"]}
    return (
        normalized(sam, case["parameters"], sam_names, "SAM"),
        normalized(cdk_template, {}, cdk_names(cdk_template), "CDK"),
    )


def self_test(template_path, case, cdk_template):
    """The check fails when either side loses a statement, a resource or a
    state of the definition, or gains a resource."""
    sam = sam_translated(template_path, case["parameters"])
    cdk_names_ = cdk_names(cdk_template)
    failures = []

    def expect(what, s, c):
        d = compare(normalized(s, case["parameters"], {lid: lid for lid in s["Resources"]}, "SAM"),
                    normalized(c, {}, cdk_names(c), "CDK"))
        ok = bool(d)
        print(("ok    " if ok else "FAIL  ") + f"self-test: {what} is reported" + (f": {d[0][:160]}" if d else ""))
        if not ok:
            failures.append(what)

    def first(template, names, rtype, key):
        return next(lid for lid, r in template["Resources"].items() if r["Type"] == rtype and names[lid] == key)

    # One IAM statement removed from the SAM side, then from the CDK side.
    s = copy.deepcopy(sam)
    s["Resources"]["DeploymentRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].pop(0)
    expect("a deployment role statement missing from SAM", s, cdk_template)
    c = copy.deepcopy(cdk_template)
    lid = first(c, cdk_names_, "AWS::IAM::Role", "PipelineRole")
    c["Resources"][lid]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"].pop()
    expect("a pipeline role statement missing from CDK", sam, c)
    # A condition on a statement loosened on the CDK side.
    c = copy.deepcopy(cdk_template)
    lid = first(c, cdk_names_, "AWS::IAM::ManagedPolicy", "RegionalPhasesPolicy")
    c["Resources"][lid]["Properties"]["PolicyDocument"]["Statement"][0].pop("Condition")
    expect("a condition dropped from a CDK statement", sam, c)
    # The release boundary's cap on secrets widened on the CDK side.
    c = copy.deepcopy(cdk_template)
    boundary = [r for lid, r in c["Resources"].items() if cdk_names_[lid] == "ReleaseRoleBoundary"]
    capped = [st for b in boundary for st in b["Properties"]["PolicyDocument"]["Statement"]
              if st.get("Sid") == "ServiceSecretValuesUnderPorter"]
    if boundary and not capped:
        print("FAIL  self-test: the CDK release boundary has no ServiceSecretValuesUnderPorter to widen")
        failures.append("the release boundary's secrets cap")
    for st in capped:
        st["Resource"] = "*"
    if capped:
        expect("the release boundary's secrets cap widened in CDK", sam, c)
    # A resource only on one side.
    c = copy.deepcopy(cdk_template)
    c["Resources"]["Extra"] = {"Type": "AWS::SNS::Topic", "Properties": {}, "Metadata": {"aws:cdk:path": "Porter/Porter/Extra"}}
    expect("a resource in CDK only", sam, c)
    s = copy.deepcopy(sam)
    del s["Resources"]["ArtifactKeyAlias"]
    expect("a resource in SAM only", s, cdk_template)
    # The definition changed on one side.
    c = copy.deepcopy(cdk_template)
    lid = first(c, cdk_names_, "AWS::StepFunctions::StateMachine", "DeployStateMachine")
    asl = json.loads(c["Resources"][lid]["Properties"]["DefinitionString"])
    asl["States"].pop(sorted(asl["States"])[0])
    c["Resources"][lid]["Properties"]["DefinitionString"] = json.dumps(asl)
    expect("a state missing from the CDK definition", sam, c)
    return failures


def main(argv):
    test = "--self-test" in argv
    argv = [a for a in argv if a != "--self-test"]
    if len(argv) != 3:
        sys.exit(__doc__)
    template_path, cases_path, cdk_dir = argv
    with open(cases_path) as f:
        cases = json.load(f)
    failed = 0
    for name, case in cases.items():
        with open(os.path.join(cdk_dir, f"{name}.template.json")) as f:
            cdk_template = json.load(f)
        diffs = compare(*sides(template_path, case, cdk_template))
        for d in diffs:
            print(f"FAIL  {name}: {d}")
        if not diffs:
            print(f"ok    {name}: the CDK stack is the SAM stack (resources, definition, IAM, properties, outputs)")
        failed += len(diffs)
        if test:
            failed += len(self_test(template_path, case, cdk_template))
            test = False  # once is enough: the cases share the code
    if failed:
        print(f"check_cdk_parity: {failed} difference(s)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
