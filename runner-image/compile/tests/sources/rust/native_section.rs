// A function whose compiled module carries a custom section named `wasmedge`, the section in
// which WasmEdge looks for native code. The operator must refuse to store it.
#[used]
#[link_section = "wasmedge"]
static NOT_NATIVE_CODE: [u8; 8] = *b"\x7fELF\x02\x01\x01\x00";

fn main() {
    println!("hello from the module's WebAssembly");
}
