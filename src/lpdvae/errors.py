"""Expected failures: the CLI prints their message (which names the file and the reason), no traceback."""


class LpdvaeError(Exception):
    """Base of every error a user can act on."""


class DataError(LpdvaeError):
    """Outside data that cannot be used: the message names the file/key/URI and why."""


class ValidationFailed(LpdvaeError):
    """The batch as a whole failed validation (too many quarantined songs)."""


class RegistryError(LpdvaeError):
    """A registry action that is refused (unblessed promotion, unknown version, ...)."""


class ModelFileError(DataError, ValueError):
    """A model file (`model.pt`, `model.json`, a logged model's `MLmodel`) that cannot be used; a
    ValueError too, so callers that caught the loader's ValueError keep catching it."""
