"""The error hierarchy, as the gateway sees it (defined in :mod:`backends.errors`)."""

from backends.errors import *  # noqa: F403
from backends.errors import __all__ as __all__
