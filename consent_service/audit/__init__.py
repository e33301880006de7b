"""The tamper-evident audit log, one feature in one folder.

- ``chain``: keys, chains ("shards"), appending, the entry of every new
  consent version in its own transaction, reading entries back.
- ``checkpoints``: signed heads of every chain; purging behind a checkpoint.
- ``verification``: walking every chain and checkpoint (``verify``).
- ``writer``: the batch writer that appends request entries off the request path.
- ``trail``: the API's request trail (after-request hook, ``/v1`` only).
- ``form_trail``: what the patient form appends, with which ids.
- ``views``: the ``/v1/audit`` blueprint; ``cli``: ``consent-service audit``.

``chain``, ``checkpoints``, ``verification`` and ``writer`` import no Flask:
the actor, the organization and the clock are passed in. Callers use the log
through this package (``from consent_service import audit``; ``audit.append(...)``).
"""

from consent_service.audit.chain import (
    GENESIS,
    Context,
    Record,
    append,
    append_in_session,
    audit_new_version,
    configure,
    current_context,
    keyring,
    list_entries,
    reset_chains,
    versions_audited,
)
from consent_service.audit.checkpoints import create_checkpoint, purge
from consent_service.audit.data import DataReport, verify_data
from consent_service.audit.verification import Report, verify

__all__ = [
    "GENESIS",
    "Context",
    "DataReport",
    "Record",
    "Report",
    "append",
    "append_in_session",
    "audit_new_version",
    "configure",
    "create_checkpoint",
    "current_context",
    "keyring",
    "list_entries",
    "purge",
    "reset_chains",
    "verify",
    "verify_data",
    "versions_audited",
]
