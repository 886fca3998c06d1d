;; Traps with `unreachable`.
(module (func (export "_start") unreachable))
