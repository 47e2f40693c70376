"""Deprecated: moved to :mod:`supervisor.lab.train` (the lab apart from the runtime); this alias goes in the next
release."""

import warnings

from supervisor.lab.train import *  # noqa: F403

warnings.warn("supervisor.train moved to supervisor.lab.train; the old name goes in the next release",
              DeprecationWarning, stacklevel=2)
from supervisor.lab.datasets import *  # noqa: E402, F403
from supervisor.lab.fitting import *  # noqa: E402, F403

if __name__ == "__main__":
    from supervisor.lab.train import main

    raise SystemExit(main())
