#!/usr/bin/env python3
"""Merges callgrind dumps into a linker symbol order: the functions that ran in the first dump,
then those new in the second, and so on (names as in the symbol table: run with --demangle=no).

usage: order.py DUMP... > scripts/link-order.txt
"""
import re
import sys

order = {}
for path in sys.argv[1:]:
    names = {}
    for line in open(path, errors="replace"):
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, ref, name = m.groups()
        if name:
            names[ref] = name
        # A function with costs of its own ran (cfn= only names a callee).
        if kind == "fn" and names.get(ref) and not names[ref].startswith("0x"):
            order.setdefault(names[ref], None)
    print(f"order: {path}: {len(order)} functions so far", file=sys.stderr)
sys.stdout.write("".join(name + "\n" for name in order))
