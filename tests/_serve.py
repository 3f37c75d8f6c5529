"""Run the real service for the browser tests: `python -m tests._serve DB_URL PORT`.

Calls the same `api.main.serve` as `datagen serve`; installs the brute-force stand-ins only
when datagen.similarity / datagen.filters are not on this branch yet."""

from __future__ import annotations

import sys

try:
    import datagen.filters  # noqa: F401
    import datagen.similarity  # noqa: F401
except ImportError:
    from tests import _standins

    _standins.install()

from api.main import serve  # noqa: E402

if __name__ == "__main__":
    serve(host="127.0.0.1", port=int(sys.argv[2]), db=sys.argv[1])
