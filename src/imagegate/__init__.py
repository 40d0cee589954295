"""imagegate: a self-hosted, drop-in replacement for OpenAI's Images API."""

__version__ = "0.1.0"
