"""User-facing errors: each says what went wrong, on which file or item, and what to do."""


class LandslideDaskError(Exception):
    """Base class; the CLI prints these as one clear message and exits with status 2."""


class EmptySearchError(LandslideDaskError):
    """A STAC search matched nothing."""


class StacUnreachableError(LandslideDaskError):
    """The STAC API did not answer."""


class InputDataError(LandslideDaskError):
    """An input file or STAC asset is missing, corrupt, or inconsistent."""
