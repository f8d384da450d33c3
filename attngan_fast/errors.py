"""The errors attngan-fast raises on purpose, each with a one-line message: what is wrong, which
file or option, what to do. The command line prints that line (no traceback unless ``--debug``)
and exits with ``exit_code``: 2 for a usage error, 1 for a failure while running.

    AttnGanError                 base; exit 1
    ├── UsageError(ValueError)   a value out of range, options that do not fit together; exit 2
    │   └── OutputExistsError(FileExistsError)  the output folder holds a run (--resume/--overwrite)
    ├── FileFormatError(ValueError)  a file that cannot be read or does not hold what it should
    └── NonFiniteLossError(RuntimeError)  training diverged: a loss became NaN or infinite
        └── NonFiniteWeightsError      a weight became NaN or infinite (found before a save)

``attngan_fast.config.ConfigError`` is a ``UsageError``. The built-in bases keep
``except ValueError`` / ``except RuntimeError`` code working.
"""

from __future__ import annotations


class AttnGanError(Exception):
    """Base of the errors of this library; the message is one line a user can act on."""

    exit_code = 1


class UsageError(AttnGanError, ValueError):
    """The call asked for something that cannot be done as given (a value out of range,
    options that contradict each other, a run that does not match the command line)."""

    exit_code = 2


class OutputExistsError(UsageError, FileExistsError):
    """The output folder already holds what the command would write; nothing was changed."""


class FileFormatError(AttnGanError, ValueError):
    """A file cannot be read, or does not hold what it should; the message names the file."""


class NonFiniteLossError(AttnGanError, RuntimeError):
    """A loss became NaN or infinite; the message names it, the step and the kept checkpoint."""


class NonFiniteWeightsError(NonFiniteLossError):
    """A weight became NaN or infinite (found before a save, which is then not made); the message
    names the tensor, the step and the kept checkpoint."""
