//! End-to-end tests against moto, started by the tests themselves.

mod events;
mod example;
mod faults;
mod hooks;
mod iam;
mod instances;
mod lifecycle;
mod notifications;
mod pipeline;
mod runtime;
mod statemachine;
mod support;
mod trigger;
