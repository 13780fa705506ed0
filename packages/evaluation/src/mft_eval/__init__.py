"""mft_eval: see the package README section in the repository README."""

__version__ = "0.1.0"
