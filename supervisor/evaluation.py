"""Deprecated: moved to :mod:`supervisor.lab.evaluation` (the lab apart from the runtime); this alias goes in the next
release."""

import warnings

from supervisor.lab.evaluation import *  # noqa: F403

warnings.warn("supervisor.evaluation moved to supervisor.lab.evaluation; the old name goes in the next release",
              DeprecationWarning, stacklevel=2)
