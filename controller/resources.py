"""Where the project's data folders (`schemas/`, `configs/`) are found at run time.

In a checkout (and an editable install) they sit beside the package; a wheel
installs them under `<prefix>/share/iaasctl/`. An environment variable overrides
both, for a packaged deployment that keeps them elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir(name: str, *, env: str) -> Path:
    """The folder `name` ("schemas" or "configs"): $env, else beside the package, else in share/."""
    override = os.environ.get(env)
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent / name
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "iaasctl" / name
