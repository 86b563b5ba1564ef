"""User-facing errors: a short message that names the file and the fix, exit code 2."""

from __future__ import annotations


class SgtuiError(Exception):
    """An error the person can fix. The CLI prints it without a traceback and exits 2."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, fix: str | None = None):
        self.message = message
        self.path = path
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.path}: {self.message}" if self.path else self.message
        return f"{head}\n  fix: {self.fix}" if self.fix else head


class RunBusy(SgtuiError):
    """Another process holds the run."""
