fn main() {
    let greeting = "hello";
    println!("{}", undefined_name);
    let _ = greeting;
}
