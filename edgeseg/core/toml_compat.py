"""TOML reading on every Python edgeseg supports: ``tomllib`` from 3.11, the ``tomli`` backport before.

``tomli`` is a dependency on Python < 3.11 (pyproject.toml) and has the same API.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

__all__ = ["tomllib"]
