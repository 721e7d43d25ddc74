"""Files written whole or not at all: a crash or a reader mid-write never sees half a file."""

from __future__ import annotations

import os
import uuid


def write_atomically(path: str, data: bytes | str) -> None:
  """Writes `data` (text as UTF-8) under a temporary name in the same directory, then renames it
  to `path` (`os.replace`, atomic on POSIX): `path` holds the old contents or the new ones."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
  except BaseException:  # interrupted or failed: no temporary file left behind
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
