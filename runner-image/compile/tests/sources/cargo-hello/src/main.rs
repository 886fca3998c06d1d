// A Cargo project without dependencies: greets, then copies stdin to stdout.
mod greeting;

use std::io::Read;

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    println!("{}", greeting::text());
    print!("{input}");
}
