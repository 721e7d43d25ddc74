"""What the commands share: a user's error as one `Error:` line and exit status 2."""

from __future__ import annotations

import sys


def fail(message: str) -> None:
  """Prints `Error: <message>` on one line (whitespace folded) to stderr and exits 2."""
  print(f"Error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(2)
