"""Smart District Gateway: the runtime (transports, log, sinks, API, CLI)."""

import sys

__version__ = "0.1.0"

# `import httpx` also imports httpx's command-line tool (click, rich, pygments: ~4 MB of RSS and
# ~40 ms at start on a Pi-class CPU) and falls back to a stub when that import fails. The gateway
# never runs httpx's CLI, so that import is made to fail: a None entry makes it an ImportError.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
