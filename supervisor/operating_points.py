"""Deprecated: moved to :mod:`supervisor.lab.operating_points` (the lab apart from the runtime); this alias goes in the next
release."""

import warnings

from supervisor.lab.operating_points import *  # noqa: F403

warnings.warn("supervisor.operating_points moved to supervisor.lab.operating_points; the old name goes in the next release",
              DeprecationWarning, stacklevel=2)
