"""The anime ML pipeline's library: a task-free core (`animeml.core`) and one module or subpackage per task."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("animeml")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "unknown"
