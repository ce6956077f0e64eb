#!/usr/bin/env python3
"""Merges callgrind dumps into a linker symbol order: the functions that ran in the first dump,
then those new in the second, and so on (names as in the symbol table: run with --demangle=no).

Callgrind marks a recursive call's name with a suffix ("f'2"); it is dropped. Valgrind calls
musl's `__libc_start_main` "(below main)". With --binary, every other name the binary's symbol
table gives the same address is listed right after the name that ran (musl's `memcpy` runs as
`__memcpy_fwd`, and the linker places by either), and a function callgrind could only name by
its address (musl's assembly has symbols without a size: `0x…777555` is `memcpy`) is named.

usage: order.py [--binary BIN] DUMP... > scripts/link-order.txt
"""
import re
import subprocess
import sys

RENAMED = {"(below main)": "__libc_start_main"}

args = sys.argv[1:]
aliases = {}
at_address = {}
if args[:1] == ["--binary"]:
    by_addr = {}
    nm = subprocess.run(["nm", "--defined-only", args[1]], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            by_addr.setdefault(parts[0], []).append(parts[2])
    for addr, names in by_addr.items():
        at_address[int(addr, 16)] = names[0]
        for name in names:
            aliases[name] = [n for n in names if n != name]
    args = args[2:]

order = {}
for path in args:
    names = {}
    for line in open(path, errors="replace"):
        m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, ref, name = m.groups()
        if name:
            name = re.sub(r"'\d+$", "", name)
            if name.startswith("0x"):
                name = at_address.get(int(name, 16), name)
            names[ref] = RENAMED.get(name, name)
        # A function with costs of its own ran (cfn= only names a callee).
        if kind == "fn" and names.get(ref) and not names[ref].startswith("0x"):
            order.setdefault(names[ref], None)
            for alias in aliases.get(names[ref], []):
                order.setdefault(alias, None)
    print(f"order: {path}: {len(order)} functions so far", file=sys.stderr)
sys.stdout.write("".join(name + "\n" for name in order))
