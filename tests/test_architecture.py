"""The layers point one way (docs/architecture.md): a module imports only from its own layer or
the layers below it, at the top of the file or inside a function alike."""

import ast
import fnmatch
import os

import transformer

PACKAGE_DIR = os.path.dirname(transformer.__file__)
# Bottom to top. Every module of the package must match exactly one layer's patterns.
LAYERS = (
    ("foundation", ["transformer", "transformer.config", "transformer.config_files",
                    "transformer.precision", "transformer.rows", "transformer.cli",
                    "transformer.compilation_cache", "transformer.cpu_devices",
                    "transformer.cpu_memory",
                    "transformer.checkpoint_integrity", "transformer.files", "transformer.plotting",
                    "transformer.op_profile"]),
    ("model", ["transformer.dropout", "transformer.attention_kernels", "transformer.attention",
               "transformer.layers",
               "transformer.model", "transformer.decoder_only", "transformer.models"]),
    ("data and decoding", ["transformer.data", "transformer.data.batching",
                           "transformer.data.encoded_cache", "transformer.data.forked_parts",
                           "transformer.data.lm_data",
                           "transformer.data.number_task", "transformer.data.parallel_encoding",
                           "transformer.data.pipeline", "transformer.data.ranges",
                           "transformer.data.sources",
                           "transformer.data.tokenizer", "transformer.decoding",
                           "transformer.sampling", "transformer.loss", "transformer.scores",
                           "transformer.translator"]),
    ("tasks", ["transformer.tasks", "transformer.tasks.*"]),
    ("training", ["transformer.training", "transformer.training.*"]),
    ("commands", ["transformer.workdir", "transformer.evaluate", "transformer.translate",
                  "transformer.sample", "transformer.average", "transformer.benchmark",
                  "transformer.compile_benchmark", "transformer.decoding_benchmark",
                  "transformer.device_check", "transformer.nanogpt_benchmark",
                  "transformer.data.benchmark", "transformer.data.prepare"]),
)


def _modules() -> dict[str, str]:
  """{module name: file path} of every module in the package."""
  found = {}
  for root, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      if not name.endswith(".py"):
        continue
      path = os.path.join(root, name)
      parts = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].split(os.sep)
      if parts[-1] == "__init__":
        parts = parts[:-1]
      found[".".join(parts)] = path
  return found


def layer_of(module: str) -> int:
  matches = [i for i, (_, patterns) in enumerate(LAYERS)
             if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
  assert len(matches) == 1, (
      f"{module} belongs to {len(matches)} layers; add it to exactly one in LAYERS (and to "
      "docs/architecture.md).")
  return matches[0]


def imported_modules(path: str, modules: dict[str, str]) -> set[str]:
  """The package's modules that the file imports, anywhere in it."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from transformer.x import y`: y is a module or a name defined in transformer.x.
      names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
    else:
      continue
    for name in names:
      if not name.startswith("transformer"):
        continue
      while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
      if name in modules:
        out.add(name)
  return out


def test_every_module_has_a_layer():
  for module in _modules():
    layer_of(module)


def test_imports_point_down():
  modules = _modules()
  upward = []
  for module, path in sorted(modules.items()):
    for target in sorted(imported_modules(path, modules)):
      if layer_of(target) > layer_of(module):
        upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                      f"({LAYERS[layer_of(target)][0]})")
  assert not upward, "Imports that point up:\n" + "\n".join(upward)


def test_the_check_sees_lazy_imports(tmp_path):
  """A function-level import counts: the check is not fooled by hiding an import in a body."""
  source = tmp_path / "m.py"
  source.write_text("def f():\n  from transformer.training.trainer import train_and_evaluate\n")
  modules = _modules()
  assert imported_modules(str(source), modules) == {"transformer.training.trainer"}
