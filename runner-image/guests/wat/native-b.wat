;; The host of the native-code tests: the same shape as native-a, but prints a 22-byte line and
;; `which` returns 2. Whatever a run prints or returns tells whose code ran.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "code of module B.....\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 22))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "which") (result i32) (i32.const 2)))
