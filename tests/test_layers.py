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
                    "rewrite.descriptor", "rewrite.affine", "rewrite.polytope"}, mods


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


# The README's worked examples of adding things, as written there.

ADD4 = '''
from rewrite.emitter import Emitter, load_row, store_row
from rewrite.script import f32
from intrinsics.base import intrinsic

class Add4(Emitter):
    operands = ("c", "a")
    def load_acc(self, b, ops): return load_row(b, ops["c"], [0], 0, 4)
    def step(self, b, ops, acc): return b.fadd(acc, load_row(b, ops["a"], [0], 0, 4))
    def store_acc(self, b, ops, acc): store_row(b, ops["c"], [0], 0, acc)

@intrinsic("user.readme.add.f32x4", isa=("avx",), cost=1.0, emitter=Add4())
def add_f32x4(c: f32[4], a: f32[4]):
    for i in range(4):
        c[i] += a[i]
'''


def test_the_readme_intrinsic_registers_and_computes_its_meaning(tmp_path):
    import numpy as np

    import intrinsics

    path = tmp_path / "mine.py"
    path.write_text(ADD4)
    (desc,) = intrinsics.load_file(path)
    try:
        c = np.arange(4, dtype=np.float32)
        a = np.full(4, 0.5, dtype=np.float32)
        intrinsics.compile_intrinsic(desc)(c=c, a=a)
        assert c.tolist() == [0.5, 1.5, 2.5, 3.5]
        assert desc.native == ("avx" in intrinsics.host_features())
    finally:
        intrinsics.unregister(desc.name)


def test_a_rule_family_added_to_the_list_runs_and_can_be_turned_off(monkeypatch):
    import rewrite.rules as rules
    from rewrite.pipeline import tensorize
    from rewrite.script import parse

    seen = []

    def apply(items, names):
        seen.append(len(items))
        return items

    mine = type("mine", (), {"apply": staticmethod(apply)})
    monkeypatch.setitem(sys.modules, "rewrite.rules.mine", mine)
    monkeypatch.setattr(rules, "FAMILIES",
                        rules.FAMILIES + (rules.Family("mine", rules.NORMALIZE, "mine", ("apply",), "my-rule"),))
    func = parse("@prim_func\ndef f(A: f32[8], B: f32[8]):\n    for i in range(8):\n        B[i] += A[i]\n")
    tensorize(func, intrinsics=[], in_process=True)
    assert seen
    seen.clear()
    tensorize(func, intrinsics=[], in_process=True, rules_off={"mine"})
    assert seen == []
