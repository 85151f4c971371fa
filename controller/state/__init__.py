"""State store: SQLite (WAL) in the state directory.

Holds what libvirt cannot: which objects the controller owns (and from which
manifest), the spec last applied, results and history (core); per-resource
status in the Kubernetes manner, conditions and events (status); the journal
of in-flight operations, suspensions and reconcile requests (control).
`get` and `describe` merge it with live state.

The directory is 0700 and the files 0600 whatever the umask. Writers take the
store's lock (worker threads share one connection) and SQLite's busy_timeout
covers other processes (the CLI talking to a running daemon's store).
"""

from __future__ import annotations

from controller.state.control import Control, JournalEntry
from controller.state.core import ChangeRecord, ObjectStatus, exclusive, lock_holder
from controller.state.status import Condition, Event, ResourceStatus, StatusRecords

__all__ = [
    "ChangeRecord", "Condition", "Event", "JournalEntry", "ObjectStatus", "ResourceStatus", "StateStore",
    "exclusive", "lock_holder",
]


class StateStore(Control, StatusRecords):
    """The whole store: core, status and control records over one connection."""
