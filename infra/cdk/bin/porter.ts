// The app `make deploy-cdk` deploys: the Porter construct alone in a stack
// named as infra/samconfig.toml names SAM's (porter-serverless), with the
// template's defaults. What SAM's guided deploy asks for comes from CDK
// context (-c key=value, lists comma-separated): serviceName, repositoryName,
// regionBucketNames and any other prop of PorterProps.
//
// Synth works on a fresh clone: without context it uses the example
// service's values (examples/hello-service), and without built functions a
// stand-in bootstrap. Each says so in a warning; `make deploy-cdk` runs with
// --strict, so neither is ever deployed.

import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Annotations, App, Stack } from "aws-cdk-lib";
import { Porter, PorterProps, PORTER_FUNCTIONS } from "../lib";

const EXAMPLE: Record<string, string> = {
  serviceName: "hello",
  repositoryName: "hello-service",
  regionBucketNames: "hello-artifacts-us-west-2,hello-artifacts-us-east-1",
};
const LISTS = new Set([
  "regionBucketNames", "regionBucketKeyArns", "deploymentRoleArns", "approverRoleNames",
  "branchEnvironments", "scheduledPipelines", "webhookHosts", "allowedExternalReferences",
]);
const KEYS = [
  ...Object.keys(EXAMPLE), ...LISTS, "architecture", "deploymentRoleName", "environmentsPath",
  "imageParameter", "branchName", "branchPattern", "schedule", "deployAction", "stagingEnvironment",
  "productionEnvironment", "notificationEmail", "logRetentionDays",
];

function repoRoot(): string {
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "Cargo.toml")) && fs.existsSync(path.join(dir, "statemachines"))) return dir;
  }
  throw new Error("porter app: not inside the porter-serverless repository");
}

const app = new App({ analyticsReporting: false });
const stack = new Stack(app, "Porter", {
  stackName: app.node.tryGetContext("stackName") ?? "porter-serverless",
  description: "porter, serverless: the deploy pipeline (the same stack as infra/template.yaml, from the Porter CDK construct)",
});

const props: Record<string, unknown> = {};
const examples: string[] = [];
for (const key of new Set(KEYS)) {
  let value: string | undefined = app.node.tryGetContext(key);
  if (value === undefined && key in EXAMPLE) {
    value = EXAMPLE[key];
    examples.push(key);
  }
  if (value === undefined) continue;
  const text = String(value);
  props[key] = LISTS.has(key) ? text.split(",").map((s) => s.trim()).filter(Boolean)
    : key === "logRetentionDays" ? Number(text) : text;
}
if (examples.length) {
  Annotations.of(stack).addWarningV2("porter:example-values",
    `using the example service's ${examples.join(", ")}: pass yours with -c KEY=VALUE`);
}

// The cargo-lambda output of the workspace; a stand-in where a function is
// not built yet, so that synth needs no build.
const targetDir = process.env.CARGO_TARGET_DIR ?? path.join(repoRoot(), "target");
let bootstrapDir = path.join(targetDir, "lambda");
const missing = PORTER_FUNCTIONS.filter((fn) => !fs.existsSync(path.join(bootstrapDir, fn, "bootstrap")));
if (missing.length) {
  bootstrapDir = path.join(os.tmpdir(), "porter-unbuilt-bootstraps");
  for (const fn of PORTER_FUNCTIONS) {
    fs.mkdirSync(path.join(bootstrapDir, fn), { recursive: true });
    fs.writeFileSync(path.join(bootstrapDir, fn, "bootstrap"), `#!/bin/sh\necho "porter: ${fn} was not built" >&2\nexit 1\n`, { mode: 0o755 });
  }
  Annotations.of(stack).addWarningV2("porter:unbuilt",
    `no bootstrap for ${missing.join(", ")} in ${path.join(targetDir, "lambda")}: synthesized with a stand-in that fails`);
}

new Porter(stack, "Porter", { ...(props as unknown as PorterProps), bootstrapDir });
