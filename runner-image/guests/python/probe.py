# The probe contract (see ../README.md) in Python.
import os
import sys

data = sys.stdin.buffer.read()
out = sys.stdout.buffer
out.write(b"hello from python\n")
out.write(("args: " + " ".join(sys.argv[1:]) + "\n").encode())
out.write(("env: " + os.environ.get("GREETING", "") + "\n").encode())
out.write(b"stdin: " + data)
out.flush()
print("probe done", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
