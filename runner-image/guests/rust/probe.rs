//! The probe contract (see ../README.md) in Rust.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let greeting = std::env::var("GREETING").unwrap_or_default();
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).expect("stdin");
    let mut out = std::io::stdout().lock();
    writeln!(out, "hello from rust").unwrap();
    writeln!(out, "args: {}", args.join(" ")).unwrap();
    writeln!(out, "env: {greeting}").unwrap();
    out.write_all(b"stdin: ").unwrap();
    out.write_all(&input).unwrap();
    out.flush().unwrap();
    eprintln!("probe done");
    let code: i32 = std::env::var("EXIT_CODE").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
