//! Links the shim with `RPATH=$ORIGIN/../lib`, so an installed shim (`<dir>/bin/`) loads
//! libwasmedge and the libraries it needs from `<dir>/lib/` — the node installer's private copy —
//! before the host's library path, which may lack them. Without that directory (the shim in
//! `target/`), the loader falls through to the system's libraries as before.
//!
//! DT_RPATH rather than the linker's default DT_RUNPATH (`--disable-new-dtags`): RUNPATH applies
//! only to the binary's own dependencies, RPATH also to theirs (libwasmedge's LLVM, libstdc++ …).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../lib");
    println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags");
}
