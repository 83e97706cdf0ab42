"""User-facing errors.

Anything a user can fix (a typo in a search space, a missing folder, a results folder that is not
one) raises `UserError`. The CLI turns it into one line on stderr and exit code 2; nothing else in
the program prints tracebacks for user mistakes.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. `where` names the file, `key` the config key (dotted)."""

    def __init__(self, message: str, *, key: str | None = None, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.key = key
        self.where = where

    def located(self, where: str) -> "UserError":
        """The same error, attributed to a file (kept if it already names one)."""
        return type(self)(self.message, key=self.key, where=self.where or where)

    def __str__(self) -> str:
        parts = [p for p in (self.where, self.key) if p]
        return ": ".join(parts + [self.message])


class ConfigError(UserError):
    """An invalid search space or experiment config."""


class DataUnavailable(ConfigError):
    """A dataset this machine cannot open (a folder not here, a hub dataset neither reachable nor
    cached). A sweep here refuses; a dry run reports it as a warning (the nodes may have it)."""


class SweepInterrupted(Exception):
    """A sweep stopped by a signal (Ctrl+C, SIGTERM) with trials unfinished; the message says how
    to resume it. The CLI prints it as one line and exits 130."""


class TrialsFailed(Exception):
    """A sweep that finished with trials that raised (status "error"); the message names them and
    the first error. The CLI prints it as one line and exits 3 (the results are written)."""


EXIT_INPUT = 2  # a user error: nothing ran, nothing was written
EXIT_TRIALS_FAILED = 3  # the sweep finished, but some trials errored
EXIT_INTERRUPTED = 130  # Ctrl+C or SIGTERM: resume with --resume
