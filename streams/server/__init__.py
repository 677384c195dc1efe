"""The asyncio network server of the stream store."""

from .app import ServerError, serve
from .config import FsyncPolicy, ServerConfig, parse_fsync_policy

__all__ = ["FsyncPolicy", "ServerConfig", "ServerError", "parse_fsync_policy", "serve"]
