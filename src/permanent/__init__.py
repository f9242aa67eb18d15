"""permanent: a server-room hum, and a small language model writing in it.

The public surface is small; everything else lives in modules named for what they are.
"""

from .config import Config, load_config
from .errors import ConfigError, DisplayError, ModelError, PermanentError
from .events import TokenEvent

__all__ = ["Config", "load_config", "ConfigError", "DisplayError", "ModelError",
           "PermanentError", "TokenEvent"]
__version__ = "0.1.0"
