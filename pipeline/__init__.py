"""Community Pulse: streaming engagement signals for online communities."""

__version__ = "0.1.0"
