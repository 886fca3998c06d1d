;; The donor of the native-code tests: prints a 20-byte line and `which` returns 1. Its
;; `wasmedge compile` output carries its machine code in a custom section named `wasmedge`,
;; which the tests graft onto native-b.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "code of module A...\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 20))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "which") (result i32) (i32.const 1)))
