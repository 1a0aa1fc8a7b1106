"""Mutant lists for ``bench/mutants.py``, one module an area.

Each module defines ``MUTANTS`` (a list of `Mutant`) and ``TESTS`` (file -> the pytest
targets that cover it: the tests run against every mutant of that file).
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    """Replace ``old`` (which occurs exactly once in ``path``) by ``new``."""

    name: str  # unique, "<area>.<what>"
    path: str  # file, relative to the repository root
    old: str
    new: str
    equivalent: str = ""  # non-empty: why no test can tell this mutant from the original
