"""The exceptions railguard raises: few, meaningful, and chained with ``raise ... from``."""


class RailguardError(Exception):
    """Base of every error railguard raises on purpose."""


class ConfigError(RailguardError):
    """A configuration or rule file is wrong; the message names the file, key and value.

    The command line turns it into exit status 2.
    """


class ProbeError(RailguardError):
    """A signal source could not take a sample (the sample becomes UNKNOWN or failing)."""


class RailwayError(RailguardError):
    """Railway's API answered with an error or could not be reached."""


class ChannelError(RailguardError):
    """An alert channel refused or failed to take a notification."""
