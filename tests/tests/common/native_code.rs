//! A forged "universal" module, built the way an attacker would: `wasmedge compile` module
//! native-a, take the `wasmedge` custom section (A's machine code) from its output and append it
//! to module native-b. Plain WasmEdge would print A's 20-byte line from B's memory; wasmfn must
//! refuse the module wherever it enters (reason NativeCodeSection).

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (make setup installs it)"));
    assert!(output.status.success(), "{command:?}: {output:?}");
}

/// Writes `native-a.wasm`, `native-b.wasm` and `forged.wasm` into `dir`; returns the forged bytes.
pub fn forge_module(dir: &Path) -> Vec<u8> {
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner-image/guests/wat");
    for name in ["native-a", "native-b"] {
        run(Command::new("wat2wasm")
            .arg(wat.join(format!("{name}.wat")))
            .arg("-o")
            .arg(dir.join(format!("{name}.wasm"))));
    }
    let universal = dir.join("native-a-universal.wasm");
    run(Command::new("wasmedge")
        .arg("compile")
        .arg(dir.join("native-a.wasm"))
        .arg(&universal));
    let universal = std::fs::read(universal).expect("universal form");
    // WasmEdge appends its section last: it runs from where the scan finds it to the end.
    let Err(wasmfn_artifact::NativeCodeError::Found { offset, .. }) =
        wasmfn_artifact::check_no_native_code(&universal)
    else {
        panic!("wasmedge compile wrote no wasmedge section");
    };
    let mut forged = std::fs::read(dir.join("native-b.wasm")).expect("native-b");
    forged.extend_from_slice(&universal[offset..]);
    std::fs::write(dir.join("forged.wasm"), &forged).expect("forged module");
    forged
}
