;; Greets, then copies stdin to stdout, 1 KiB at a time, with raw WASI calls.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..8: one iovec; 8..12: bytes transferred; 16..: greeting; 1024..2048: buffer
  (data (i32.const 16) "hello from wat\n")
  (func $write (param $offset i32) (param $length i32)
    (i32.store (i32.const 0) (local.get $offset))
    (i32.store (i32.const 4) (local.get $length))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $write (i32.const 16) (i32.const 15))
    (block $done
      (loop $copy
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 1024))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $done (i32.eqz (i32.load (i32.const 8))))
        (call $write (i32.const 1024) (i32.load (i32.const 8)))
        (br $copy)))))
