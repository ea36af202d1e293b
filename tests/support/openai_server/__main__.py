"""``python -m tests.support.openai_server``: run the server (see :mod:`.cli`)."""

from tests.support.openai_server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
