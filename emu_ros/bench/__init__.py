"""Benchmarks: scripts that print numbers and write one JSON each (never timed unit tests)."""
from __future__ import annotations

import json
import os


def write_json(path: str, result: dict) -> None:
    """Write a benchmark's result atomically (a half-written JSON never replaces a good one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)
