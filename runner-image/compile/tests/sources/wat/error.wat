(module
  (func (export "f") (result i32)
    (i32.no_such_instruction)))
