#!/usr/bin/env python3
"""Checks docs/ARCHITECTURE.md against the tree: every repository path it names in backticks
exists, and every "Note [Name]" cited in the code is a note that the page defines (and each
note it defines is cited somewhere). Exits non-zero naming what is missing."""
import os
import re
import subprocess
import sys

ROOTS = ("include/", "src/", "tests/", "tools/", "cmake/", "scripts/", "docs/", "bench/",
         "fuzz/", "examples/")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    doc_path = os.path.join(root, "docs", "ARCHITECTURE.md")
    doc = open(doc_path, encoding="utf-8").read()
    errors = []
    paths = [p for p in re.findall(r"`([^`\s]+)`", doc) if p.startswith(ROOTS)]
    for p in paths:
        if not os.path.exists(os.path.join(root, p)):
            errors.append(f"docs/ARCHITECTURE.md names {p}, which does not exist")
    defined = set(re.findall(r"^## Note \[([^\]]+)\]", doc, re.M))
    files = subprocess.run(["git", "ls-files", "src", "include", "tools", "tests"], cwd=root,
                           capture_output=True, text=True, check=True).stdout.split()
    cited = {}
    for f in files:
        if not f.endswith((".h", ".cpp", ".cu", ".cuh")):
            continue
        text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
        for name in re.findall(r"Note \[([^\]]+)\]", text):
            cited.setdefault(name, f)
    for name, f in sorted(cited.items()):
        if name not in defined:
            errors.append(f"{f} cites Note [{name}], which docs/ARCHITECTURE.md does not define")
    for name in sorted(defined - set(cited)):
        errors.append(f"docs/ARCHITECTURE.md defines Note [{name}], which no code cites")
    for e in errors:
        print("check_docs:", e, file=sys.stderr)
    print(f"check_docs: {len(paths)} paths, {len(defined)} notes, {len(cited)} cited: "
          f"{'ok' if not errors else str(len(errors)) + ' problems'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
