import sys

def broken(:
    return 1
