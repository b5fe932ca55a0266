"""Prints, one a line, the files that the named distributions and every
distribution they require (transitively, as installed) put into this
environment's site-packages, relative to it: the PyTorch image is built from
exactly these, linked out of the trainer's virtual environment.

    python dist_files.py torch
"""

import os
import re
import sys
import sysconfig
from importlib import metadata

REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names):
    """The installed distributions named, and all they require (extras excluded)."""
    seen, todo = {}, [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            # A requirement whose marker did not apply here was never installed.
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            match = REQUIREMENT_NAME.match(req)
            if match:
                todo.append(canonical(match.group(1)))
    return seen


def main(names):
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    missing = [n for n in names if canonical(n) not in closure([n])]
    if missing:
        sys.exit(f"not installed: {', '.join(missing)}")
    out = set()
    for dist in closure(names).values():
        for file in dist.files or []:
            path = os.path.realpath(dist.locate_file(file))
            rel = os.path.relpath(path, site)
            # Scripts in bin/ and other files outside site-packages stay out.
            if rel.startswith("..") or not os.path.isfile(path):
                continue
            out.add(rel)
    for rel in sorted(out):
        print(rel)


if __name__ == "__main__":
    main(sys.argv[1:] or sys.exit(__doc__))
