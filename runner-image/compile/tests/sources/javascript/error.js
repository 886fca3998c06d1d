import * as std from 'std';

const total = 1 +;
std.out.puts(String(total));
