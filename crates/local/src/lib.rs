//! The local stack: moto as AWS (with its Step Functions interpreter on),
//! the bootstrap a real account would already have, and the servers moto
//! lacks — the Lambda Invoke API over the real handlers, CodePipeline's
//! job API, instances that boot their UserData, load balancers that check
//! health and carry traffic, and CloudFormation signals.

pub mod bootstrap;
pub mod callers;
pub mod deploy;
pub mod elb;
pub mod front;
pub mod hook_runner;
pub mod iam;
pub mod iam_request;
pub mod instance_secrets;
pub mod instances;
pub mod invoke_host;
pub mod job_sim;
pub mod load;
pub mod moto;
pub mod names;
pub mod netns;
pub mod query;
pub mod signals;
pub mod stack;
pub mod strict;
mod wire;
