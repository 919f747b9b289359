"""One exception hierarchy for casebase.

    CasebaseError                 base; its message is a one-line user error
    ├── ConfigError               a setting is missing or malformed
    ├── DatabaseError             the server is unreachable, too old, or lacks pgvector
    │   ├── SchemaError           the schema is missing or behind: run `casebase db upgrade`
    │   ├── ReadOnlyError         a write sent to a read-only standby
    │   └── ReplicaLagError       a standby did not replay up to a WAL position in time
    ├── ModelError                model weights or architecture cannot be loaded
    ├── InputError                user input is invalid (file, row, filter value, vector)
    │   ├── ManifestError         a manifest cannot be read at all (stops before loading)
    │   └── QueryError            a search request is invalid (k, filters, unknown study id)
    ├── IngestError               a batch cannot run (e.g. content of a loaded study changed)
    └── LLMError                  an LLM call failed after retries or returned invalid output

Foreign exceptions (psycopg, torch, PIL, pydicom, litellm) are translated at the
boundary with ``raise CasebaseError(...) from exc``; the CLI prints ``str(exc)``
and exits non-zero, never a traceback.
"""

from __future__ import annotations


class CasebaseError(Exception):
    """Base class: the message is meant for a user and fits on one line."""


class ConfigError(CasebaseError):
    pass


class DatabaseError(CasebaseError):
    pass


class SchemaError(DatabaseError):
    pass


class ReadOnlyError(DatabaseError):
    pass


class ReplicaLagError(DatabaseError):
    pass


class ModelError(CasebaseError):
    pass


class InputError(CasebaseError):
    pass


class ManifestError(InputError):
    pass


class QueryError(InputError):
    pass


class IngestError(CasebaseError):
    pass


class LLMError(CasebaseError):
    pass
