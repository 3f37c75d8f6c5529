"""Is a holder alive: the one rule shared by run leases, job claims and the run list.

Kept free of the storage layer so `datagen runs` can apply it without loading SQLAlchemy.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def holder_dead(host: str, pid: int, expires_at: datetime, now: datetime) -> bool:
    """Expired, or a vanished pid on this host."""
    if expires_at.tzinfo is None:  # SQLite keeps no zone; every stored time is UTC
        expires_at = expires_at.replace(tzinfo=timezone.utc)
    return expires_at <= now or (host == HOST and not pid_alive(pid))
