"""portscope: what listens, who owns it, can I reach it, and why not."""

__version__ = "0.1.0"
