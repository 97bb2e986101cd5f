//! porter's service lifecycle — pack → provision → promote → prune — as a
//! library that knows nothing of Lambda.
//!
//! Each phase is a resumable step ([`phase::Step`]): it either finishes with
//! an output or hands back a small state and how long to wait before it is
//! called again. Step Functions, CodePipeline and the CLI all drive the same
//! steps. AWS calls live in [`aws`]; [`config`], [`plan`] and [`template`]
//! are pure.

pub mod aws;
pub mod balancer;
pub mod config;
pub mod execution;
pub mod gate;
pub mod history;
pub mod hooks;
pub mod image;
pub mod job_origin;
pub mod lease;
pub mod limits;
pub mod overlay;
pub mod pack;
pub mod phase;
pub mod pinning;
pub mod pins;
pub mod plan;
pub mod promote;
pub mod provision;
pub mod prune;
pub mod regions;
pub mod release;
pub mod settings;
pub mod store;
pub mod target;
pub mod template;
pub mod yaml;
