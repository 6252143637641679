"""Server Responder: runs jobs when asked over HTTP and reports what happened."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("server-responder")
except PackageNotFoundError:
    __version__ = "0.0.0"
