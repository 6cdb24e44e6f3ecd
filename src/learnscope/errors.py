"""Errors that learnscope reports to a user as one line (exit code 2 on the command line)."""


class LearnscopeError(Exception):
    """Bad input from the user: unknown study, wrong config field, impossible value, bad file.

    The command line prints ``learnscope: error: <message>`` and exits with code 2.
    """


class ConfigError(LearnscopeError):
    """A configuration value or file is invalid."""


class StoreError(LearnscopeError):
    """The run store cannot be opened or written (corrupt file, unwritable directory)."""
