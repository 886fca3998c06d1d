// A library (reactor) module: the runner calls `add` with typed arguments given as JSON.
export function add(a: i32, b: i32): i32 {
  return a + b;
}
