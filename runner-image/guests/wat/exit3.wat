;; Calls proc_exit(3) directly.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (func (export "_start") (call $exit (i32.const 3)))
  (memory (export "memory") 1))
