//! One bad behaviour per run, chosen by the first argument.
use std::io::Write;

#[allow(unconditional_recursion)]
fn recurse(depth: u64, buffer: &mut [u8; 4096]) -> u64 {
    // A frame with a real buffer on the (shadow) stack that the optimiser cannot remove.
    let mut local = [0u8; 4096];
    local[(depth % 4096) as usize] = buffer[(depth % 4096) as usize].wrapping_add(1);
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "memory-bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "flood" => {
            let megabytes: usize = std::env::args().nth(2).and_then(|n| n.parse().ok()).unwrap_or(100);
            let chunk = vec![b'x'; 1 << 20];
            let mut out = std::io::stdout().lock();
            for _ in 0..megabytes {
                out.write_all(&chunk).unwrap();
            }
        }
        "stack-overflow" => {
            let mut seed = [0u8; 4096];
            println!("{}", recurse(0, &mut seed));
        }
        "trap" => {
            let divisor = std::hint::black_box(0u32);
            println!("{}", 1 / divisor);
        }
        "loop" => loop {
            std::hint::black_box(0);
        },
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
