"""Prints, one a line, the files that the named distributions and every
distribution they require (transitively, as installed, with the extras
each requirement asks for) put into this environment's site-packages,
relative to it: the PyTorch image is built from exactly these, linked out
of the trainer's virtual environment.

    python dist_files.py torch
"""

import os
import re
import sys
import sysconfig
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a bare virtual environment: pip's own copy
    from pip._vendor.packaging.requirements import Requirement


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def applies(req, extras):
    """Whether a requirement holds here for a distribution asked for with `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def closure(names):
    """The installed distributions named, and all they require."""
    seen, todo = {}, [(canonical(n), frozenset()) for n in names]
    visited = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            # A requirement whose marker did not apply at install time.
            continue
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if applies(req, extras):
                todo.append((canonical(req.name), frozenset(req.extras)))
    return seen


def main(names):
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    dists = closure(names)
    missing = [n for n in names if canonical(n) not in dists]
    if missing:
        sys.exit(f"not installed: {', '.join(missing)}")
    out = set()
    for dist in dists.values():
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
