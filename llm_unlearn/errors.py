"""Exception types for user-facing errors. Holds no logic beyond message formatting."""


class UnlearnError(Exception):
    """Base class of every error llm-unlearn raises for bad user input or environment."""


class ConfigError(UnlearnError, ValueError):
    """A recipe config is invalid: unknown key, wrong type, missing required field."""


class DataError(UnlearnError, ValueError):
    """A data file is invalid. Messages name the file, the line/record and the field."""


class ModelLoadError(UnlearnError, RuntimeError):
    """A model or tokenizer could not be loaded from the given spec."""


class TrainingDivergedError(UnlearnError, RuntimeError):
    """Unlearning diverged (NaN/inf loss or forget NLL above the configured ceiling)."""


class OutputDirError(UnlearnError, FileExistsError):
    """An output directory is non-empty or is the base model's own folder."""
