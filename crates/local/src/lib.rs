//! The local stack: moto as AWS (with its Step Functions interpreter on),
//! the bootstrap a real account would already have, and the servers moto
//! lacks — the Lambda Invoke API over the real handlers and CodePipeline's
//! job API.

pub mod bootstrap;
pub mod deploy;
pub mod invoke_host;
pub mod job_sim;
pub mod moto;
pub mod names;
pub mod stack;
