"""The launcher's error: a step failed, and the message says what was wrong and how to fix it."""


class LauncherError(RuntimeError):
    """A step of the launcher failed; the message says what was wrong and how to fix it."""
