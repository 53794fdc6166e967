"""The one exception type a user sees: a bad input, reported as one line, exit status 2."""


class VxsimError(Exception):
    """Bad input or a refused operation. The CLI prints ``vxsim: error: <message>`` and exits 2."""


class ConfigError(VxsimError):
    """A config key has a bad value; the message names the key and what is allowed."""
