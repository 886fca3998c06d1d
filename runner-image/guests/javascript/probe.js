// The probe contract (see ../README.md) in JavaScript (QuickJS with wasmedge_quickjs's std/os).
import * as std from 'std';

// wasmedge_quickjs puts the script path and its arguments in the global `args`.
const args = globalThis.args.slice(1).join(' ');
const greeting = std.getenv('GREETING') || '';
const input = std.in.readAsString();
std.out.puts(`hello from javascript\nargs: ${args}\nenv: ${greeting}\nstdin: ${input}`);
std.out.flush();
std.err.puts('probe done\n');
std.exit(parseInt(std.getenv('EXIT_CODE') || '0', 10));
