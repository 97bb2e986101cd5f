// The environment pins (crates/core/src/pins.rs): which regions an
// environment deploys to and with which deployment role. They belong to the
// account, not to one service's Porter stack (every service deploying to
// `production` reads the same pin), so they are a construct of their own,
// for the administrator's stack, not a part of Porter.

import { CfnResource, Token } from "aws-cdk-lib";
import { Construct } from "constructs";

export interface PorterRegionPin {
  /** The deployment role the phases assume in this region. */
  readonly roleArn: string;
}

export interface PorterEnvironmentPin {
  /** Region name to its pin. */
  readonly regions: Record<string, PorterRegionPin>;
}

export interface PorterEnvironmentPinsProps {
  /** Environment name to its pin. */
  readonly environments: Record<string, PorterEnvironmentPin>;
  /** The SSM path the Porter stacks read (their environmentsPath). @default "/porter/environments/" */
  readonly path?: string;
}

/** One SSM parameter per environment: `{"regions": {"REGION": {"role_arn": "ARN"}}}`. */
export class PorterEnvironmentPins extends Construct {
  constructor(scope: Construct, id: string, props: PorterEnvironmentPinsProps) {
    super(scope, id);
    const base = (props.path ?? "/porter/environments/").replace(/\/+$/, "");
    for (const [name, pin] of Object.entries(props.environments)) {
      // The names the pipeline and .porter/config use for environments.
      if (!/^[A-Za-z0-9]+$/.test(name)) throw new Error(`PorterEnvironmentPins: environment name ${JSON.stringify(name)} is not alphanumeric`);
      const regions = Object.entries(pin.regions);
      if (!regions.length) throw new Error(`PorterEnvironmentPins: ${name} pins no region`);
      for (const [region, r] of regions) {
        if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(region)) throw new Error(`PorterEnvironmentPins: ${name}: ${region} is not a region name`);
        if (!Token.isUnresolved(r.roleArn) && !/^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/.test(r.roleArn)) {
          throw new Error(`PorterEnvironmentPins: ${name}/${region}: ${r.roleArn} is not a role ARN`);
        }
      }
      const value = { regions: Object.fromEntries(regions.map(([region, r]) => [region, { role_arn: r.roleArn }])) };
      new CfnResource(this, name, {
        type: "AWS::SSM::Parameter",
        properties: { Name: `${base}/${name}`, Type: "String", Value: JSON.stringify(value), Description: `porter: where ${name} deploys` },
      });
    }
  }
}
