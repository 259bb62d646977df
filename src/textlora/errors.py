"""The exceptions textlora raises for user mistakes; the CLI prints their message without a traceback."""


class TextloraError(Exception):
    """Base class: a problem the user can fix, explained in the message."""


class ConfigError(TextloraError, ValueError):
    """A config value or key is wrong."""


class DataError(TextloraError, ValueError):
    """A data file is missing, unreadable or malformed."""


class ModelError(TextloraError, ValueError):
    """A base model or run folder cannot be loaded, or does not match."""


class RunExistsError(TextloraError, FileExistsError):
    """The output folder already holds a run or other files."""


class DiskFullError(TextloraError, OSError):
    """A checkpoint or run folder could not be written: no space left on the device."""


class TrainingError(TextloraError, RuntimeError):
    """Training went wrong in a way a setting can fix, e.g. the loss stopped being a finite number."""
