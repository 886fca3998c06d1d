//! The lock-down of every pod the operator starts; it lives in `wasmfn-api` so the end-to-end
//! suites build their own pods with the same contexts, and is re-exported here for the operator.
pub use wasmfn_api::pod_security::*;
