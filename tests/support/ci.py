"""Whether the tests run under CI: there, a missing tool or a rewrite switch must fail, not skip."""

from __future__ import annotations

import os


def under_ci() -> bool:
    """`CI` set to anything but empty, `0` or `false` (CI services set `CI=true`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")
