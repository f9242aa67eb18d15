"""permanent: a server-room hum, and a small language model writing in it.

The public surface is small; everything else lives in modules named for what they are.
"""

import os

# Before anything imports pyo, here or in a child process (which inherits it): without
# it pyo's import prints a wxPython banner on stdout. (room.devices.import_pyo also
# swallows the Tkinter one that Debian's Python still gets.)
os.environ.setdefault("PYO_GUI_WX", "0")

from .config import Config, load_config
from .errors import ConfigError, DisplayError, ModelError, PermanentError
from .events import TokenEvent

__all__ = ["Config", "load_config", "ConfigError", "DisplayError", "ModelError",
           "PermanentError", "TokenEvent"]
__version__ = "0.1.0"
