"""Errors a user can cause. The CLI prints them on one line and exits 1."""


class WeightScopeError(Exception):
    """Base class: something about the user's input or environment is wrong."""


class SourceError(WeightScopeError):
    """A checkpoint could not be found, opened or read."""


class UnsafeCheckpointError(SourceError):
    """A pickle that would need arbitrary code to load."""


class UnknownMethodError(WeightScopeError, ValueError):
    """A method name that is not registered."""


class DeviceError(WeightScopeError):
    """The requested device is not available."""


class ComparisonError(WeightScopeError):
    """Two inputs cannot be compared as asked."""


class ConfigError(WeightScopeError, ValueError):
    """A bad argument (callbacks, monitors, CLI options)."""
