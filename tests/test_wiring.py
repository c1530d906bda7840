"""dvc.yaml, the only wiring, and dvc.lock as committed: read from the files, with no project to run."""

from __future__ import annotations

import re

import yaml

from .scratch import ROOT


def _project_imports(path, seen: set) -> set:
    """Files of src/ganlab that `path` imports, directly or through other project modules, with the
    `__init__.py` of every package on the way (importing a module runs them)."""
    import ast

    def module_file(name: str):
        base = ROOT / "src" / name.replace(".", "/")
        return next((f for f in (base.with_suffix(".py"), base / "__init__.py") if f.exists()), None)

    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ganlab"):
            # `from ganlab.pkg import module` imports the module; `from ganlab.pkg.module import name` the module.
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ganlab.")]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and isinstance(node.args[0], ast.JoinedStr)):
            # importlib.import_module(f"ganlab.training.step_{backend}"): every module the prefix can name.
            package, _, stem = node.args[0].values[0].value.rpartition(".")
            names = [f"{package}.{f.stem}" for f in (ROOT / "src" / package.replace(".", "/")).glob(stem + "*.py")]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # ganlab/__init__.py, ganlab.pkg/__init__.py, then the module
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    _project_imports(f, seen)
    return seen


def test_every_stage_depends_on_every_module_its_script_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = ROOT / re.search(r"pipeline/\w+\.py", stage["cmd"]).group(0)
        deps = {d if isinstance(d, str) else next(iter(d)) for d in stage["deps"]}
        used = {str(f.relative_to(ROOT)) for f in _project_imports(script, set())}
        assert str(script.relative_to(ROOT)) in deps, name
        assert not used - deps, f"stage {name} imports {sorted(used - deps)} without depending on them"


def test_every_dvc_command_exists():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        words = stage["cmd"].split()
        assert words[:2] == ["PYTHONPATH=src", "python"], "a stage imports the ganlab of its own workspace"
        script = words[2]
        assert script == f"pipeline/{name}.py", "one stage, one name"
        assert (ROOT / script).exists()
        assert script in stage["deps"]
    readme = (ROOT / "README.md").read_text()
    for target in ("make run", "make test"):
        assert target in readme


def test_the_committed_dvc_lock_matches_the_code():
    """A fresh clone's `dvc status` must not show stages as changed: dvc.lock holds every source file's
    hash as committed (after changing one, `make run` or `dvc commit` updates the lock)."""
    import hashlib

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    stale = [f"{name}: {dep['path']}" for name, stage in lock.items() for dep in stage.get("deps", [])
             if dep["path"].endswith(".py")
             and hashlib.md5((ROOT / dep["path"]).read_bytes()).hexdigest() != dep["md5"]]
    assert not stale, f"dvc.lock is stale for {stale}"
    wanted = {name: {d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])}
              for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}
    for name, deps in wanted.items():
        assert {d["path"] for d in lock[name]["deps"]} >= {d for d in deps if d.endswith(".py")}, name
