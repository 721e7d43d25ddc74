"""transformer.files.write_atomically: the old contents or the new, never a part."""

import os

import pytest

from transformer.files import write_atomically


def test_a_write_that_dies_before_the_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
  path = tmp_path / "sub" / "config.json"
  write_atomically(str(path), '{"old": true}')
  assert path.read_text() == '{"old": true}'

  def crash(*_):
    raise KeyboardInterrupt  # the process killed after writing the new bytes, before the rename
  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    write_atomically(str(path), b'{"new": tr')
  assert path.read_text() == '{"old": true}'
  assert os.listdir(path.parent) == ["config.json"]  # and the temporary file removed
  monkeypatch.undo()
  write_atomically(str(path), b"\xc3\xa4")  # bytes as given; text as UTF-8
  assert path.read_text(encoding="utf-8") == "ä"
