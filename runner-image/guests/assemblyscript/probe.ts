// The probe contract (see ../README.md) in AssemblyScript, using the WASI shim's `process`.
const args = process.argv.slice(1).join(" ");
const greeting = process.env.has("GREETING") ? process.env.get("GREETING") : "";
process.stdout.write("hello from assemblyscript\nargs: " + args + "\nenv: " + greeting + "\nstdin: ");
const buffer = new ArrayBuffer(4096);
while (true) {
  const n = process.stdin.read(buffer);
  if (n <= 0) break;
  process.stdout.write(buffer.slice(0, n));
}
process.stderr.write("probe done\n");
const code = process.env.has("EXIT_CODE") ? I32.parseInt(process.env.get("EXIT_CODE")) : 0;
process.exit(code);
