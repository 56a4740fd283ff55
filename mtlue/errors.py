"""Typed errors raised by the library; cli.py turns them into exit codes."""


class MtlueError(Exception):
    """Base class: a problem the user can fix, with a message naming what is at fault."""


class SourceError(MtlueError):
    """A dataset source is missing, malformed or holds a bad sample (names file/row/task)."""


class StoreError(MtlueError):
    """A store cannot be written or read (names the store, shard or file)."""


class IntegrityError(StoreError):
    """A store fails verification: checksum, schema or index mismatch (names the shard)."""


class ConfigError(MtlueError):
    """An option or recipe value is invalid (names the option)."""


class ProtectionError(MtlueError):
    """A perturbation violates the budget or holds NaN; nothing was written."""


class CheckpointError(ConfigError):
    """A checkpoint file cannot be loaded safely, or is not one mtlue wrote (names the file)."""
