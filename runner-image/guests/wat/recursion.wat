;; Unbounded non-tail recursion of WebAssembly calls (exhausts the runtime's call stack).
(module
  (global $g (mut i32) (i32.const 0))
  (func $down (param i32) (result i32)
    (global.set $g (local.get 0))
    (i32.xor (call $down (i32.add (local.get 0) (i32.const 1))) (global.get $g)))
  (func (export "_start") (drop (call $down (i32.const 0)))))
