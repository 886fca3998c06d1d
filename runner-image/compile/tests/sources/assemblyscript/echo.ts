// Greets, then copies stdin to stdout (through the WASI shim's `process`).
process.stdout.write("hello from assemblyscript\n");
const chunk = new ArrayBuffer(1024);
let read = process.stdin.read(chunk);
while (read > 0) {
  process.stdout.write(chunk.slice(0, read));
  read = process.stdin.read(chunk);
}
