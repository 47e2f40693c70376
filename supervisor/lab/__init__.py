"""The lab: training the probes and the judge, operating points, the evaluation harness and its dataset readers.

It imports the runtime (``supervisor``); the runtime never imports it (an import-linter contract in ``make lint``
keeps it so). Its heavier dependencies come with the ``lab`` extra."""
