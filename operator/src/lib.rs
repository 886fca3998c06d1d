//! wasmfn-operator: the controller manager. The API types live in the `wasmfn-api` crate.
//!
//! Modules: [`config`] (flags and env), [`crdgen`], [`function`] (the WasmFunction controller),
//! [`store`] (artifact stores and their garbage collection), [`leader`] (Lease election),
//! [`health`] (probes and metrics), [`pod_security`] (the lock-down of every pod it starts),
//! [`network_policy`] (the deny-egress policy where those pods run), [`respell`] (old-case enum
//! values re-spelled at startup), [`context`] and [`error`].

pub mod admission;
pub mod agent;
pub mod builder_pin;
pub mod config;
pub mod context;
pub mod crdgen;
pub mod error;
pub mod execution;
pub mod function;
pub mod health;
pub mod idempotent;
pub mod label_selector;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod network_policy;
pub mod operator;
pub mod pod_security;
pub mod reconciler;
pub mod registry_auth;
pub mod respell;
#[cfg(test)]
pub mod scenario;
pub mod store;
pub mod telemetry;
pub mod watched;

pub use error::{Error, Result};
