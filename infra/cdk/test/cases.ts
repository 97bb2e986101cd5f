// The parity cases (parity-cases.json, in the SAM template's parameter
// names) as the construct's props, synthesized the way the checks want
// them: no bootstrap-version rule (moto has no CDK bootstrap) and stand-in
// bootstraps (synth zips, it never builds).

import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { App, DefaultStackSynthesizer, Stack } from "aws-cdk-lib";
import { Porter, PorterProps, PORTER_FUNCTIONS } from "../lib";

export const CASES: Record<string, { parameters: Record<string, string> }> = JSON.parse(
  fs.readFileSync(path.join(__dirname, "..", "..", "test", "parity-cases.json"), "utf8"),
);

const LISTS = new Set([
  "DeploymentRoleArns", "RegionBucketNames", "RegionBucketKeyArns", "ApproverRoleNames",
  "BranchEnvironments", "ScheduledPipelines", "WebhookHosts", "AllowedExternalReferences",
  "ServiceDataStores",
]);

/** A case's SAM parameters as props: ServiceName -> serviceName, lists split. */
export function propsOf(parameters: Record<string, string>): PorterProps {
  const props: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(parameters)) {
    const key = name[0].toLowerCase() + name.slice(1);
    props[key] = LISTS.has(name) ? value.split(",").filter(Boolean)
      : name === "LogRetentionDays" ? Number(value) : value;
  }
  return props as unknown as PorterProps;
}

/** A directory of stand-in bootstraps, one per function. */
export function standInBootstraps(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "porter-cdk-test-"));
  for (const fn of PORTER_FUNCTIONS) {
    fs.mkdirSync(path.join(dir, fn));
    fs.writeFileSync(path.join(dir, fn, "bootstrap"), `#!/bin/sh\n# ${fn}: not built\nexit 1\n`, { mode: 0o755 });
  }
  return dir;
}

/** The construct alone in a stack, as the checks synthesize it. */
export function synth(props: PorterProps): { app: App; stack: Stack } {
  // Path metadata, as the CDK CLI asks for: the parity check maps by it.
  const app = new App({ analyticsReporting: false, context: { "aws:cdk:enable-path-metadata": true } });
  const stack = new Stack(app, "Porter", {
    synthesizer: new DefaultStackSynthesizer({ generateBootstrapVersionRule: false }),
  });
  new Porter(stack, "Porter", props);
  return { app, stack };
}
