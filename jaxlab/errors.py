"""Exceptions that the CLI reports as one clear line (exit code 2)."""


class JaxlabError(Exception):
    """Base class for errors caused by user input (configs, files, run dirs)."""


class ConfigError(JaxlabError, ValueError):
    """An experiment config (or a part of it, e.g. a network spec) is invalid.

    The message always starts with the path of the field at fault, e.g.
    ``data.batch_size: expected a positive int, got '64x'``.
    """


class DataError(JaxlabError, ValueError):
    """A dataset file is missing, truncated or has the wrong shape or labels."""


class CheckpointError(JaxlabError):
    """A checkpoint is missing, damaged or incompatible with the model."""
