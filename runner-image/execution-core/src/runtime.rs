//! Process-wide WasmEdge settings: the library version, its logging, and the configuration a
//! run's limits translate into.

use std::sync::Once;

use wasmedge_sdk::config::{CommonConfigOptions, Config, ConfigBuilder, RuntimeConfigOptions};

use crate::request::Limits;
use crate::Error;

/// The WasmEdge library version actually loaded (e.g. `0.14.1`).
pub fn runtime_version() -> String {
    wasmedge_sys::utils::version_string()
}

static QUIET: Once = Once::new();

/// Turns WasmEdge's own logging off (it would write to the guest's stdout). Idempotent.
pub fn silence_runtime_log() {
    QUIET.call_once(wasmedge_sdk::LogManager::log_off);
}

/// Whether a configuration may run native code found while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeCode {
    /// For AOT files a runner compiled itself from the module's verified bytes.
    FromVerifiedAot,
    /// For module bytes a user supplied: WasmEdge's interpreter is forced, so its loader ignores
    /// any `wasmedge` section in them (the scan in `prepare` refuses those modules first; this
    /// is the second wall should the two parsers ever disagree).
    Forbidden,
}

/// The configuration for a run under `limits`: the memory limit becomes WasmEdge's maximum page
/// count, which makes `memory.grow` fail past it and instantiation fail for a module whose
/// initial memory is larger.
pub fn config_for(limits: &Limits, native_code: NativeCode) -> Result<Config, Error> {
    let common =
        CommonConfigOptions::default().interpreter_mode(native_code == NativeCode::Forbidden);
    ConfigBuilder::new(common)
        .with_runtime_config(RuntimeConfigOptions::new().max_memory_pages(limits.memory_pages()))
        .build()
        .map_err(|e| Error::Runtime(format!("runtime configuration: {e}")))
}
