// A library module: the runner calls `multiply` with numbers.
export function multiply(a: i32, b: i32): i32 {
  return a * b;
}
