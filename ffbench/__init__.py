"""ffbench: compare forward-forward training methods against backpropagation, honestly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ffbench")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0+unknown"
