"""Errors that the command line turns into one clear line and a non-zero exit."""


class GenclustError(Exception):
    """Base class: a user-facing error with a one-line message."""


class DataError(GenclustError):
    """Missing, corrupt or inconsistent data files."""


class ConfigError(GenclustError):
    """An impossible or unknown configuration value."""


class DivergenceError(GenclustError):
    """A training loss turned NaN/inf; training stopped and the last good checkpoint is kept."""
