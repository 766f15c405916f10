"""Installed distributions' versions, for the presence message.

``importlib.metadata`` answers this, but loading it (with ``zipfile``, ``csv`` and
``importlib.resources``) adds about 0.8 MiB to an idle connector's RSS, a fifth of what it
has above the tutorial-style baseline (bench/README.md, "Footprint"). The version is one
header of the ``METADATA`` file in the distribution's ``.dist-info`` directory, which pip
installs (editable installs too); that file is read here the way ``importlib.metadata``
finds it: the first match along ``sys.path``, names compared normalised. Anything else (an
``.egg-info``, a zip on the path) is left to ``importlib.metadata``.
"""

from __future__ import annotations

import os
import re
import sys

UNKNOWN = "unknown"


def version(distribution: str) -> str:
    """The version of an installed distribution, or ``unknown``."""
    wanted = _normalise(distribution)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            low = name.lower()
            if low.endswith(".dist-info") and _normalise(low.partition("-")[0]) == wanted:
                found = _metadata_version(os.path.join(entry, name, "METADATA"))
                if found is not None:
                    return found
    return _from_importlib(distribution)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_version(path: str) -> str | None:
    """The Version header of a METADATA file (RFC 822 style: headers end at a blank line)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    return None
                key, colon, value = line.partition(":")
                if colon and key.strip().lower() == "version":
                    return value.strip()
    except OSError:
        return None
    return None


def _from_importlib(distribution: str) -> str:
    from importlib import metadata  # noqa: PLC0415 - see the module's docstring

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return UNKNOWN
