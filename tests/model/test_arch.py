"""model/arch.py is the ground floor of model/: the package's import graph has no cycle, and arch imports
nothing of textlora but config and errors."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "bench" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycle():
    assert _import_graph().main(str(ROOT / "src" / "textlora"))["cycles"] == []


def test_the_script_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = _import_graph().main(str(pkg))
    assert graph["cycles"] == [["pkg.a", "pkg.b"]] and graph["edges"] == 3 and graph["modules"] == 4


def test_arch_is_the_ground_floor():
    graph = _import_graph()
    names = graph.module_names(ROOT / "src" / "textlora")
    imports = graph.imports_of("textlora.model.arch", names["textlora.model.arch"], set(names))
    assert imports <= {"textlora.config", "textlora.errors"}
