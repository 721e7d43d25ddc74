"""What the commands share: a user's error as one `Error:` line and exit status 2, and line
numbers listed in messages."""

from __future__ import annotations

import sys
from typing import Sequence


def fail(message: str) -> None:
  """Prints `Error: <message>` on one line (whitespace folded) to stderr and exits 2."""
  print(f"Error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(2)


def line_list(numbers: Sequence[int], limit: int = 20) -> str:
  """"3, 7, 12" (1-based line numbers), "... and N more" past `limit`."""
  shown = ", ".join(str(n) for n in numbers[:limit])
  return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
