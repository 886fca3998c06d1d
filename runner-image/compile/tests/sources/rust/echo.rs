// Greets, then copies stdin to stdout.
use std::io::Read;

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    println!("hello from rust");
    print!("{input}");
}
