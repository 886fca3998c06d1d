;; CPU-bound work for the AOT-vs-interpreter comparison: recursive fib(n), n from the
;; reactor argument, or fib(27) printed as the exit code's low byte from `_start`.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (func $fib (export "fib") (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "_start") (drop (call $fib (i32.const 27))))
  (memory (export "memory") 1))
