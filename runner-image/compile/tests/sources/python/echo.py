# Greets, then copies stdin to stdout.
import sys

print("hello from python")
sys.stdout.write(sys.stdin.read())
