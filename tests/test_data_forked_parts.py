"""forked_parts.map_parts: parts run on forked children, results in order, failures redone."""

import multiprocessing
import os
import time

import pytest
from absl.testing import absltest

from transformer.data import forked_parts

fork_only = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")


def _part_and_pid(part):
  return list(part), os.getpid()


@fork_only
@pytest.mark.parametrize("processes,expected_parts", [(3, 3), (4, 3), (1, 1)])
def test_parts_are_contiguous_in_order_and_all_but_the_first_run_in_children(processes,
                                                                             expected_parts):
  items = list(range(31))
  results = forked_parts.map_parts(_part_and_pid, items, min_items_per_process=10,
                                   processes=processes)  # 31 items: at most 3 parts of >= 10
  assert len(results) == expected_parts
  assert [x for part, _ in results for x in part] == items
  assert min(len(part) for part, _ in results) >= 10
  pids = [pid for _, pid in results]
  assert pids[0] == os.getpid() and os.getpid() not in pids[1:] and len(set(pids)) == len(pids)


def test_without_fork_everything_runs_here(monkeypatch):
  monkeypatch.setattr(forked_parts.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
  assert forked_parts.map_parts(_part_and_pid, range(40), min_items_per_process=10,
                                processes=4) == [(list(range(40)), os.getpid())]


@fork_only
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_child_s_part_runs_here_with_a_warning(how):
  parent = os.getpid()

  def square(part):
    if os.getpid() != parent:
      if how == "exit":
        os._exit(3)
      raise MemoryError("no more memory in the child")
    return [x * x for x in part]

  with absltest.mock.patch.object(forked_parts.logging, "warning") as warning:
    results = forked_parts.map_parts(square, list(range(20)), min_items_per_process=10,
                                     processes=2)
  assert results == [[x * x for x in range(10)], [x * x for x in range(10, 20)]]
  message = warning.call_args[0][0] % warning.call_args[0][1:]
  assert "running its part here instead" in message
  assert ("no more memory in the child" if how == "raise" else "without an answer") in message


@fork_only
def test_an_error_in_this_process_s_part_leaves_no_child_running():
  parent = os.getpid()

  def slow_in_children(part):
    if os.getpid() == parent:
      raise ValueError("bad first part")
    time.sleep(60)
    return part

  children_before = set(multiprocessing.active_children())
  with pytest.raises(ValueError, match="bad first part"):
    forked_parts.map_parts(slow_in_children, list(range(20)), min_items_per_process=10,
                           processes=2)
  assert set(multiprocessing.active_children()) == children_before
