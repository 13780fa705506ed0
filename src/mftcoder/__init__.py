"""mftcoder: the umbrella package; its code is the pipeline runner `mft`."""

__version__ = "0.1.0"
