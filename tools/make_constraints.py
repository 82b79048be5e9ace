"""Write constraints.txt: the exact versions of everything the project installs.

Run it with the Python of a working environment (one where the tests pass)::

    python tools/make_constraints.py > constraints.txt

It reads the requirements of ``pyproject.toml`` (core and the ``testing`` and ``all``
extras), follows them through the installed distributions' metadata (markers evaluated
for this platform, extras followed) and prints ``name==version`` for every distribution
reached, sorted by name.  ``pyproject.toml`` keeps lower bounds only; this file is what
CI and the README's commands install (``pip install -c constraints.txt ...``).

``--alias tensorflow=tensorflow-cpu`` takes the version of a requirement that is not
installed from another distribution that provides the same modules (the environment the
constraints were first made from had ``tensorflow-cpu``; both wheels have one version
number and one set of dependencies).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# Left to the venv and to build isolation (pip freeze leaves them out too).
_BUILD_TOOLS = {"pip", "setuptools", "wheel"}


def _dist(name: str, aliases: dict[str, str]) -> md.Distribution:
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        if canonicalize_name(name) in aliases:
            return md.distribution(aliases[canonicalize_name(name)])
        raise SystemExit(f"make_constraints: {name} is required but not installed in {sys.prefix}")


def closure(roots: list[str], aliases: dict[str, str]) -> dict[str, str]:
    """Return {canonical name: version} of every distribution that ``roots`` reach."""
    pins: dict[str, str] = {}
    todo = [(Requirement(r), frozenset()) for r in roots]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = _dist(req.name, aliases)
        if not req.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"make_constraints: installed {req.name} {dist.version} does not satisfy {req}")
        pins[name] = dist.version
        for sub in dist.requires or []:
            r = Requirement(sub)
            envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
            if r.marker is None or any(r.marker.evaluate(e) for e in envs):
                todo.append((r, frozenset()))
    return pins


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", nargs="*", default=["testing", "all"])
    ap.add_argument("--alias", action="append", default=[], metavar="REQUIRED=INSTALLED")
    args = ap.parse_args(argv)
    aliases = {canonicalize_name(a.split("=")[0]): a.split("=")[1] for a in args.alias}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = list(project["dependencies"])
    for e in args.extras:
        roots += project["optional-dependencies"][e]
    pins = closure([r for r in roots if Requirement(r).marker is None or Requirement(r).marker.evaluate()], aliases)
    print("# Exact versions that CI and the README's commands install (pip install -c constraints.txt ...).")
    print("# Made by tools/make_constraints.py from an environment in which the tests pass;")
    print(f"# Python {sys.version_info.major}.{sys.version_info.minor} on Linux x86_64.  pyproject.toml has lower bounds only.")
    for name in sorted(set(pins) - _BUILD_TOOLS):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
