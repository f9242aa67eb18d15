"""The exceptions `permanent` raises on purpose.

    PermanentError            anything the user can fix; the CLI prints it and exits non-zero
    ├── ConfigError           config.yaml or a sound preset is wrong (exit 2)
    ├── ModelError            the model cannot be found, converted or loaded
    ├── AudioError            the configured audio output is missing or broken (exit 2)
    └── DisplayError          no screen to draw on

Each message names the problem and the fix, so the CLI never needs a traceback.
"""


class PermanentError(Exception):
    exit_code = 1


class ConfigError(PermanentError):
    exit_code = 2


class ModelError(PermanentError):
    pass


class AudioError(PermanentError):
    exit_code = 2


class DisplayError(PermanentError):
    pass
