"""Two hosts sharing one workdir: process 0 trains the tokenizer and encodes the split, process 1
waits at the barrier and reads both (transformer/tasks/translation.py, process_0_first).

Two processes on 127.0.0.1 joined by `jax.distributed` (gloo), each building the translation
task's training data as train.py does.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_data_encoded_cache import data_dir, entries  # noqa: F401 (a fixture)
from test_data_pipeline import make_config
from test_training_distributed import free_port

from transformer.data import pipeline
from transformer.data.encoded_cache import ENCODED_DIR
from transformer.data.tokenizer import Tokenizer

pytestmark = pytest.mark.slow

HOST = r"""
import json, sys
import jax
address, pid, data_dir, workdir = sys.argv[1:5]
jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=int(pid))
from absl import logging
logging.set_verbosity(logging.INFO)
from test_data_pipeline import make_config
from transformer.tasks.translation import TranslationTask
config = make_config(data_dir, **json.loads(sys.argv[5]))
data = TranslationTask().data(config, workdir)
batch = next(data.train_iter)
print("BATCH " + json.dumps({k: v.tolist() for k, v in batch.items()}))
"""

SETTINGS = dict(batching="tokens", test_split="", eval_every_steps=0, vocab_size=60,
                tokenizer_model="unigram", tokenizer_sample_sentences=10_000, cache_encoded=True)


def test_process_0_trains_and_encodes_the_other_host_waits_and_reads(data_dir, tmp_path):  # noqa: F811
  workdir = str(tmp_path / "shared")
  address = f"127.0.0.1:{free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.getcwd()]))
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, "-c", HOST, address, str(i), str(data_dir), workdir,
                             json.dumps(SETTINGS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-4000:]
    outs.append((out, err))
  (out0, log0), (out1, log1) = outs

  assert "Training the tokenizer" in log0 and "encoded pairs to" in log0   # saved both
  assert "Training the tokenizer" not in log1 and "Loaded tokenizer" in log1
  assert "Read " in log1 and "encoded pairs" in log1 and "Saved" not in log1
  assert len(entries(os.path.join(workdir, ENCODED_DIR))) == 1

  # Each host holds its slice of the same global batch, as one process computing it would.
  config = make_config(data_dir, **SETTINGS)
  tok = Tokenizer.load(os.path.join(workdir, "tokenizer.model"))
  for i, out in enumerate((out0, out1)):
    got = json.loads(out.split("BATCH ", 1)[1])
    want = next(pipeline.make_train_iterator(config, tok, process_index=i, process_count=2))
    assert got.keys() == want.keys()
    for key in want:
      np.testing.assert_array_equal(np.array(got[key]), want[key], err_msg=f"host {i} {key}")
