#!/usr/bin/env python3
"""Parity of the CDK construct (infra/cdk/) with the SAM template.

    .venv/bin/python scripts/cdk-parity.py CDK_OUT

CDK_OUT is the cloud assembly of `cdk synth` of infra/cdk's sample app
(scripts/check-cdk.sh makes it). For each stack of
infra/cdk/bin/sample-stacks.json, the SAM template is transformed to plain
CloudFormation by samtranslator with the same values as SAM parameters
(allowDelete: true -> AllowDelete="true"), and both templates are evaluated
the way CloudFormation would: parameters, conditions, Fn::If, Fn::Sub,
Fn::Join and Fn::FindInMap resolved, resources whose condition is false
dropped. A Ref or Fn::GetAtt of a resource becomes <Name> or <Name.Attr>,
where Name is the SAM logical id, or for CDK the construct path below the
S3Fanout construct ("CopierFunction/WorkQueue/Resource" -> CopierFunctionWorkQueue),
so CDK's hashed logical ids do not matter.

Then every resource is compared property by property (IAM statements by
Sid, with actions and resources as sets; the state machine definition
after substitution; dashboard bodies widget by widget, metric by metric;
for each function, the crate directory cargo-lambda builds it in), and so
are the outputs and the construct's defaults against the template's (read
from the compiled infra/cdk/dist/lib/props.js, which the synth builds).
Each difference is printed; the exit status is 1 if there is any.

Run with the project's .venv Python: samtranslator comes with cfn-lint.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "infra" / "template.yaml"
CDK_DIR = REPO / "infra" / "cdk"
SAMPLES = CDK_DIR / "bin" / "sample-stacks.json"

# samtranslator asks boto for the partition of the session's region; with
# one set it never looks for credentials or calls anything.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import logging  # noqa: E402

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

# "There are unpublished metrics": samtranslator's own usage metrics.
logging.getLogger("samtranslator").setLevel(logging.ERROR)

NO_VALUE = object()
STACK_NAME = "STACK"
PSEUDO = {
    "AWS::StackName": STACK_NAME,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}
# The tags SAM puts on what it generates; CDK has no such marker.
SAM_TAGS = {"lambda:createdBy", "stateMachine:createdBy"}
# Properties that are not the same thing said twice: where the code is
# uploaded (SAM's placeholder against CDK's asset) and the definition's S3
# location (its content is compared instead).
IGNORED = {
    "AWS::Lambda::Function": {"Code"},
    "AWS::StepFunctions::StateMachine": {"DefinitionS3Location"},
}


class Unsupported(Exception):
    pass


# --- evaluation ----------------------------------------------------------------


class Evaluator:
    """Resolves a template's intrinsics for one set of parameter values."""

    def __init__(self, template: dict, params: dict, names: dict[str, str], env: dict):
        self.t = template
        self.names = names
        self.pseudo = dict(PSEUDO, **{"AWS::AccountId": env["account"], "AWS::Region": env["region"]})
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in params:
                self.params[name] = params[name]
            elif "Default" in spec:
                self.params[name] = str(spec["Default"])
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.ev(self.t["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.names:
            return f"<{self.names[name]}>"
        raise Unsupported(f"Ref to unknown {name}")

    def getatt(self, name: str, attribute: str) -> str:
        if name not in self.names:
            raise Unsupported(f"GetAtt of unknown {name}")
        return f"<{self.names[name]}.{attribute}>"

    def sub(self, text: str, variables: dict) -> str:
        def one(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return scalar(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                return self.getatt(*inner.split(".", 1))
            return scalar(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def ev(self, node):
        if isinstance(node, list):
            return [v for v in (self.ev(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.getatt(name, attribute)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                return self.sub(arg[0], self.ev(arg[1]))
            if key == "Fn::Join":
                return self.ev(arg[0]).join(scalar(x) for x in self.ev(arg[1]))
            if key == "Fn::If":
                return self.ev(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = self.ev(arg)
                return scalar(a) == scalar(b)
            if key == "Fn::Not":
                return not self.ev(arg[0])
            if key == "Fn::And":
                return all(self.ev(arg))
            if key == "Fn::Or":
                return any(self.ev(arg))
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::FindInMap":
                table, first, second = (scalar(x) for x in self.ev(arg))
                return self.t["Mappings"][table][first][second]
            if key == "Fn::Select":
                index, items = self.ev(arg)
                return items[int(index)]
            if key == "Fn::Split":
                separator, text = self.ev(arg)
                return text.split(separator)
            if key.startswith("Fn::"):
                raise Unsupported(key)
        out = {}
        for key, value in node.items():
            value = self.ev(value)
            if value is not NO_VALUE:
                out[key] = value
        return out

    def live(self, resource: dict) -> bool:
        return "Condition" not in resource or self.condition(resource["Condition"])


def scalar(value) -> str:
    """Numbers, booleans and strings compared as CloudFormation sees them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float, str)):
        return str(value)
    raise Unsupported(f"not a scalar: {value!r}")


# --- the two templates ------------------------------------------------------------


def sam_template(params: dict) -> tuple[dict, dict[str, str], dict[str, Path]]:
    """SAM -> CloudFormation, with local paths swapped for S3 placeholders."""
    template = yaml_parse(TEMPLATE.read_text())
    definitions, code = {}, {}
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            code[name] = (TEMPLATE.parent / props["CodeUri"]).resolve()
            props["CodeUri"] = "s3://sam-placeholder/code.zip"
        elif resource["Type"] == "AWS::Serverless::StateMachine":
            definitions[name] = (TEMPLATE.parent / props["DefinitionUri"]).resolve()
            props["DefinitionUri"] = f"s3://sam-placeholder/{name}.json"

    class NoManagedPolicies:
        # Only consulted for managed policy names, which the template uses
        # none of; the real loader would call IAM.
        def load(self):
            return {}

    cfn = transform(template, params, NoManagedPolicies())
    names = {logical: logical for logical in cfn["Resources"]}
    return cfn, names, {"Definition": definitions, "CodeDirectory": code}


def cdk_template(cdk_out: Path, stack: str) -> tuple[dict, dict[str, str], dict[str, Path]]:
    template = json.loads((cdk_out / f"{stack}.template.json").read_text())
    assets = json.loads((cdk_out / f"{stack}.assets.json").read_text())["files"]
    names = {}
    for logical, resource in template["Resources"].items():
        path = resource.get("Metadata", {}).get("aws:cdk:path")
        if path is None:
            continue
        # Stack/S3Fanout/CopierFunction/WorkQueue/Resource -> CopierFunctionWorkQueue
        parts = [p for p in path.split("/")[2:] if p != "Resource"]
        names[logical] = "".join(parts)
    definitions, code = {}, {}
    for logical, resource in template["Resources"].items():
        # Bundling skipped, an asset is the directory cargo-lambda builds in.
        if resource["Type"] == "AWS::Lambda::Function":
            code[logical] = (cdk_out / resource["Metadata"]["aws:asset:path"]).resolve()
        location = resource.get("Properties", {}).get("DefinitionS3Location")
        if location:
            key = location["Key"]
            asset = assets[key.split(".")[0]]
            definitions[logical] = cdk_out / asset["source"]["path"]
    return template, names, {"Definition": definitions, "CodeDirectory": code}


# --- normalisation -----------------------------------------------------------------


def as_set(value) -> list:
    items = value if isinstance(value, list) else [value]
    return sorted({scalar(v) for v in items})


def principal(value):
    if value == "*":
        return {"AWS": ["*"]}
    return {k: as_set(v) for k, v in value.items()}


def statements(document: dict) -> dict:
    out = {}
    items = document.get("Statement", [])
    for i, s in enumerate(items if isinstance(items, list) else [items]):
        n = {"Effect": s.get("Effect", "Allow")}
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            if key in s:
                n[key] = as_set(s[key])
        if "Principal" in s:
            n["Principal"] = principal(s["Principal"])
        if "Condition" in s:
            n["Condition"] = {op: {k: as_set(v) for k, v in kv.items()} for op, kv in s["Condition"].items()}
        out[s.get("Sid", f"#{i}")] = n
    return out


def canonical(value):
    """Scalars as strings, empty lists and maps as absent, maps sorted."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            v = canonical(v)
            if v not in ([], {}):
                out[k] = v
        return out
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return scalar(value)


def alarm_metrics(metrics: list) -> dict:
    # The id of the expression an alarm returns is its own business (CDK
    # numbers it expr_1): only ids other metrics refer to are compared.
    out = {}
    for m in metrics:
        m = dict(m)
        returned = m.get("ReturnData", True) in (True, "true")
        key = "<returned>" if returned else m["Id"]
        m.pop("Id")
        m["ReturnData"] = returned
        out[key] = m
    return out


def dashboard(body: str) -> list:
    widgets = []
    for w in json.loads(body)["widgets"]:
        p = w.get("properties", {})
        n = {"type": w["type"], "x": w.get("x"), "y": w.get("y"), "width": w.get("width"), "height": w.get("height")}
        if w["type"] == "text":
            n["markdown"] = p["markdown"]
        elif w["type"] == "alarm":
            n.update(title=p.get("title"), alarms=p["alarms"])
        else:
            lines = [graph_metric(m, p) for m in p["metrics"]]
            n.update(
                title=p.get("title"),
                view=p.get("view", "timeSeries"),
                stacked=bool(p.get("stacked", False)),
                region=p.get("region"),
                annotations=[(a.get("label"), a["value"]) for a in p.get("annotations", {}).get("horizontal", [])],
                # Hidden metrics are not drawn: only the lines' order matters.
                metrics=[m for m in lines if m.get("visible", True)],
                hidden=sorted((m for m in lines if not m.get("visible", True)), key=json.dumps),
            )
        widgets.append(canonical(n))
    return sorted(widgets, key=lambda w: (int(w["y"]), int(w["x"])))


def graph_metric(entry: list, widget: dict) -> dict:
    options = entry[-1] if isinstance(entry[-1], dict) else {}
    if "expression" in options:
        return {k: options.get(k) for k in ("expression", "label")} | {"yAxis": options.get("yAxis", "left")}
    names = entry[:-1] if options else entry
    return {
        "metric": names[:2],
        "dimensions": dict(zip(names[2::2], names[3::2])),
        "stat": options.get("stat", widget.get("stat", "Average")),
        "period": options.get("period", widget.get("period", 300)),
        "label": options.get("label"),
        "yAxis": options.get("yAxis", "left"),
        "visible": options.get("visible", True),
        # Ids matter only where an expression refers to the metric.
        "id": options.get("id") if options.get("visible", True) is False else None,
    }


def definition(path: Path, substitutions: dict) -> object:
    text = path.read_text()
    text = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: scalar(substitutions[m.group(1)]), text)
    return json.loads(text)


def normalise(kind: str, resource: dict, files: dict[str, dict[str, Path]], logical: str) -> dict:
    props = {k: v for k, v in resource.get("Properties", {}).items() if k not in IGNORED.get(kind, set())}
    out = {
        "DeletionPolicy": resource.get("DeletionPolicy", "Delete"),
        "UpdateReplacePolicy": resource.get("UpdateReplacePolicy", "Delete"),
    }
    if "Tags" in props:
        props["Tags"] = [t for t in props["Tags"] if t["Key"] not in SAM_TAGS]
    if kind == "AWS::IAM::Role":
        props["AssumeRolePolicyDocument"] = statements(props["AssumeRolePolicyDocument"])
        props["Policies"] = {p["PolicyName"]: statements(p["PolicyDocument"]) for p in props.get("Policies", [])}
    if "PolicyDocument" in props:
        props["PolicyDocument"] = statements(props["PolicyDocument"])
    if kind == "AWS::CloudWatch::Alarm" and "Metrics" in props:
        props["Metrics"] = alarm_metrics(props["Metrics"])
    if kind == "AWS::CloudWatch::Dashboard":
        props["DashboardBody"] = dashboard(props["DashboardBody"])
    if kind == "AWS::StepFunctions::StateMachine":
        props["Definition"] = definition(files["Definition"][logical], props.get("DefinitionSubstitutions", {}))
    if kind == "AWS::Lambda::Function":
        # The crate cargo-lambda builds the function in.
        props["CodeDirectory"] = str(files["CodeDirectory"][logical].relative_to(REPO))
        # CloudFormation's defaults, which one side may state and the other not.
        props.setdefault("Architectures", ["x86_64"])
    out.update(props)
    return canonical(out)


def evaluated(template: dict, names: dict, files: dict, params: dict, env: dict) -> dict:
    ev = Evaluator(template, params, names, env)
    resources = {}
    for logical, resource in template["Resources"].items():
        if logical not in names or not ev.live(resource):
            continue
        kind = resource["Type"]
        body = ev.ev({k: v for k, v in resource.items() if k not in ("Metadata", "DependsOn", "Condition")})
        resources[f"{kind} {names[logical]}"] = normalise(kind, body, files, logical)
    outputs = {
        key: canonical(ev.ev({k: v for k, v in out.items() if k in ("Value", "Description")}))
        for key, out in template.get("Outputs", {}).items()
        if ev.live(out)
    }
    return {"resources": resources, "outputs": outputs}


# --- comparison ----------------------------------------------------------------


def differences(sam, cdk, path: str = "") -> list[str]:
    if isinstance(sam, dict) and isinstance(cdk, dict):
        out = []
        for key in sorted(set(sam) | set(cdk), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in cdk:
                out.append(f"{where}: only in SAM: {short(sam[key])}")
            elif key not in sam:
                out.append(f"{where}: only in CDK: {short(cdk[key])}")
            else:
                out.extend(differences(sam[key], cdk[key], where))
        return out
    if isinstance(sam, list) and isinstance(cdk, list) and len(sam) == len(cdk):
        out = []
        for i, (a, b) in enumerate(zip(sam, cdk)):
            out.extend(differences(a, b, f"{path}[{i}]"))
        return out
    if sam != cdk:
        return [f"{path}: SAM {short(sam)} != CDK {short(cdk)}"]
    return []


def short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 300 else text[:297] + "..."


def sam_parameters(props: dict) -> dict:
    return {name[0].upper() + name[1:]: scalar(value) for name, value in props.items()}


def construct_defaults() -> dict:
    # The construct's own table, from its compiled JavaScript: the defaults
    # are checked against the template's, not copied here.
    script = "console.log(JSON.stringify(require('./dist/lib/props').DEFAULTS))"
    result = subprocess.run(["node", "-e", script], cwd=CDK_DIR, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    cdk_out = Path(sys.argv[1])
    samples = json.loads(SAMPLES.read_text())
    env = samples["env"]
    sam_params = yaml_parse(TEMPLATE.read_text())["Parameters"]
    passed, failed = 0, 0

    def check(what: str, problems: list[str]) -> None:
        nonlocal passed, failed
        if problems:
            failed += 1
            print(f"DIFFERS  {what}")
            for problem in problems:
                print(f"    {problem}")
        else:
            passed += 1
            print(f"same     {what}")

    # Props mirror the parameters: same names in camelCase, same defaults.
    defaults = construct_defaults()
    problems = []
    for name, spec in sam_params.items():
        prop = name[0].lower() + name[1:]
        if "Default" not in spec:
            continue
        if prop not in defaults:
            problems.append(f"{name}: no default for prop {prop}")
        elif scalar(defaults[prop]) != scalar(spec["Default"]):
            problems.append(f"{name}: SAM default {spec['Default']!r} != CDK {defaults[prop]!r}")
    for prop in defaults:
        if prop[0].upper() + prop[1:] not in sam_params and prop != "stackOutputs":
            problems.append(f"prop {prop}: no SAM parameter of that name")
    check("props: a default for every SAM parameter default, equal", problems)

    for stack, props in samples["stacks"].items():
        params = sam_parameters(props)
        unknown = sorted(set(params) - set(sam_params))
        check(f"{stack}: every prop is a SAM parameter", [f"{p}: not a SAM parameter" for p in unknown])
        if not (cdk_out / f"{stack}.template.json").is_file():
            check(f"{stack}: synthesized", [f"no {stack}.template.json in {cdk_out}: run cdk synth first"])
            continue
        sam = evaluated(*sam_template(params), params, env)
        cdk = evaluated(*cdk_template(cdk_out, stack), {}, env)
        kinds_sam = sorted(k.split(" ")[0] for k in sam["resources"])
        kinds_cdk = sorted(k.split(" ")[0] for k in cdk["resources"])
        check(f"{stack}: resource types and counts ({len(kinds_sam)} in SAM, {len(kinds_cdk)} in CDK)",
              differences(count(kinds_sam), count(kinds_cdk)))
        for key in sorted(set(sam["resources"]) | set(cdk["resources"])):
            if key not in cdk["resources"]:
                check(f"{stack}: {key}", ["only in SAM"])
            elif key not in sam["resources"]:
                check(f"{stack}: {key}", ["only in CDK"])
            else:
                check(f"{stack}: {key}", differences(sam["resources"][key], cdk["resources"][key]))
        check(f"{stack}: outputs", differences(sam["outputs"], cdk["outputs"]))

    print(f"\ncdk-parity: {passed} passed, {failed} failed")
    return 1 if failed else 0


def count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


if __name__ == "__main__":
    sys.exit(main())
