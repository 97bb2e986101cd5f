// Writes OUT/CASE.template.json for each parity case: what
// scripts/check_cdk_parity.py compares with the SAM template and
// scripts/inspect_cdk.py creates in moto.

import * as fs from "fs";
import * as path from "path";
import { CASES, propsOf, standInBootstraps, synth } from "./cases";

const out = process.argv[2];
if (!out) throw new Error("usage: synth-cases.js OUT_DIR");
fs.mkdirSync(out, { recursive: true });
const bootstrapDir = standInBootstraps();
for (const [name, c] of Object.entries(CASES)) {
  const { app, stack } = synth({ ...propsOf(c.parameters), bootstrapDir });
  fs.writeFileSync(path.join(out, `${name}.template.json`), JSON.stringify(app.synth().getStackArtifact(stack.artifactId).template, null, 1));
}
fs.rmSync(bootstrapDir, { recursive: true });
