module wasmfn.dev/guests/probe

go 1.24
