"""The root of every error a user should see as one line (bad input, unreachable server, ...).

Anything else is a bug and keeps its traceback. New error classes derive from DatagenError.
"""

from __future__ import annotations


class DatagenError(Exception):
    """A problem worth one clear line to the user and a non-zero exit."""
