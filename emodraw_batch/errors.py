"""One error type for everything a user can fix.

Every message says the rule, what was received and the fix, so the CLI can print
it as one paragraph and exit non-zero without a traceback.
"""

from __future__ import annotations


class EmodrawError(Exception):
    """An error the user can act on; the CLI prints it without a traceback."""


class InputError(EmodrawError):
    """The input files, columns or types are not usable."""


class ConfigError(EmodrawError):
    """The configuration file or a flag is invalid."""


class ModelError(EmodrawError):
    """The checkpoint cannot be found or loaded safely."""


class OutputError(EmodrawError):
    """The output folder cannot be written, or holds an incompatible earlier run."""
