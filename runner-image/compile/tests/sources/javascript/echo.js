// Greets, then copies stdin to stdout (QuickJS's std module).
import * as std from 'std';

std.out.puts('hello from javascript\n');
std.out.puts(std.in.readAsString());
std.out.flush();
