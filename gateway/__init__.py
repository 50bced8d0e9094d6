"""Smart District Gateway: the runtime (transports, log, sinks, API, CLI)."""

__version__ = "0.1.0"
