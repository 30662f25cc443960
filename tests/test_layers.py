"""The layers of the code hold: import-linter's contracts (pyproject.toml) are kept, and the
package faces load only what they need."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_by(statement: str) -> set[str]:
    """The project's modules a fresh interpreter has loaded after ``statement``."""
    code = (f"import sys\n{statement}\n"
            "import json\n"
            "print(json.dumps(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('rewrite', 'intrinsics'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout))


def test_import_contracts_are_kept():
    r = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                        "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


def test_the_ir_loads_alone():
    assert loaded_by("import rewrite.ir") == {"rewrite", "rewrite.ir"}


def test_the_language_loads_no_search_and_no_backend():
    mods = loaded_by("import rewrite.script")
    assert mods <= {"rewrite", "rewrite.ir", "rewrite.printer", "rewrite.script", "rewrite.verify",
                    "rewrite.descriptor", "rewrite.affine"}, mods


def test_the_intrinsic_library_loads_no_search_no_runtime_and_no_tools():
    mods = loaded_by("import intrinsics")
    for heavy in ("rewrite.pipeline", "rewrite.saturate", "rewrite.extract", "rewrite.runtime",
                  "rewrite.cli", "rewrite.tools", "rewrite.fuzz"):
        assert heavy not in mods


def test_a_call_in_a_script_finds_the_built_in_library_without_importing_it():
    # the parser reads the library in force; the built-ins come in through their entry point
    mods = loaded_by("from rewrite.script import parse\n"
                     "parse('''\n@prim_func\ndef f(C: f32[8], A: f32[8], B: f32[8]):\n"
                     "    call(\"x86.fma.f32x8\", c=window(C[0], (1,)), a=window(A[0], (1,)), "
                     "b=window(B[0], (1,)))\n''')")
    assert "intrinsics.x86" in mods
