"""Errors that reach the user: each names the file (or setting) and what is wrong with it."""

from __future__ import annotations

import os


class SzviewerError(Exception):
    """Base class of the errors the CLI reports as one line and exit status 2."""


class InputError(SzviewerError):
    """Bad input: a file that is missing, truncated, of the wrong kind, or with the wrong content."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class OutputExistsError(SzviewerError):
    """Refusing to overwrite something that already exists."""

    def __init__(self, path: str | os.PathLike, hint: str = "choose another path or pass --overwrite"):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: already exists; {hint}")


class Cancelled(SzviewerError):
    """A long job was cancelled by its caller; nothing half-written is left behind."""
