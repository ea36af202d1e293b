"""Test-only code: debug task kinds and a local OpenAI-compatible server."""
