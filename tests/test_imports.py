"""The import contract, read from the source (no module is imported, so no framework is loaded): no import circle
among the project's modules, counting function-local imports; no framework import in the core, not even a lazy
one; the environment is prepared in one module only. Then, in fresh processes, what that one module promises: the
oneDNN decision is in place before MindSpore's first kernel whatever the user imported first."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ms_transfer", "parity", "torch_reference")
FRAMEWORKS = ("mindspore", "torch", "torchvision")
ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")   # oneDNN 3 reads both, oneDNN 2.2 (MindSpore 2.7.2) the second

# (the core's framework-neutrality, function-local and dynamic imports included: tests/test_backend_protocol.py)
#: the one module allowed to change the process environment at import (see its docstring)
PREPARE_MODULE = "ms_transfer.mindspore_backend.context"


def _modules() -> Dict[str, Path]:
    """``dotted name -> file`` of every module of the three packages (a package is its ``__init__``)."""
    mods = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(module: str, tree: ast.AST) -> Iterator[Tuple[ast.stmt, List[str]]]:
    """Every import statement anywhere in ``tree`` (module level, functions, ``TYPE_CHECKING`` blocks) with the
    absolute names it may load: ``from a import b`` may load ``a`` and ``a.b``."""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node, [base] + [f"{base}.{alias.name}" for alias in node.names]


def _project_module(name: str) -> str:
    """The longest project module ``name`` lies in, or ``""`` (outside the project)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _graph() -> Dict[str, Set[str]]:
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, names in _imports(module, ast.parse(path.read_text())):
            edges[module] |= {t for t in map(_project_module, names) if t and t != module}
    return edges


def _cycles(edges: Dict[str, Set[str]]) -> Set[FrozenSet[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: Set[FrozenSet[str]] = set()
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def test_the_cycle_finder_finds_a_circle_through_a_function_local_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()
    tree = ast.parse("def f():\n    from .data import x\n")
    assert [names for _, names in _imports("ms_transfer.core.weights", tree)] == [
        ["ms_transfer.core.data", "ms_transfer.core.data.x"]]


def test_no_import_cycles_counting_function_local_imports():
    cycles = sorted(sorted(c) for c in _cycles(_graph()))
    assert not cycles, (f"import circles (function-local imports count): {cycles}. Move what both sides need into a "
                        f"module below them (as ms_transfer.core.layout / presets were for core.data/download/weights)")


def _top_level(tree: ast.Module) -> Iterator[ast.AST]:
    """The nodes that run when the module is imported: everything but function bodies (and the ``__main__``
    block, which runs only as a script)."""
    todo: List[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


_ENVIRONMENT_CALLS = ("os.environ.pop", "os.environ.setdefault", "os.environ.update", "os.environ.clear",
                      "os.putenv", "os.unsetenv", "matplotlib.use", "ms.set_context", "mindspore.set_context")


def _changes_the_environment(node: ast.AST) -> bool:
    """``os.environ[...] = ...`` / ``del``, or a call of :data:`_ENVIRONMENT_CALLS`."""
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
        targets = [node.target] if isinstance(node, ast.AugAssign) else node.targets
        return any("environ[" in ast.unparse(t) for t in targets)
    return isinstance(node, ast.Call) and ast.unparse(node.func).startswith(_ENVIRONMENT_CALLS)


def test_only_the_prepare_module_changes_the_environment_at_import():
    offenders = []
    for module, path in MODULES.items():
        for node in _top_level(ast.parse(path.read_text())):
            if _changes_the_environment(node) and module != PREPARE_MODULE:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, (f"environment changed at import outside {PREPARE_MODULE}: {offenders}; do it in a "
                           f"function, or in {PREPARE_MODULE} if MindSpore needs it before its first kernel")


def test_every_mindspore_module_of_the_package_imports_the_prepare_module():
    """A module that imports MindSpore at import time gets the oneDNN decision with it: it imports
    ms_transfer.mindspore_backend.context itself, or lives in ms_transfer.models, whose package ``__init__`` does."""
    def imports_at_top(module: str) -> Set[str]:
        tree = ast.parse(MODULES[module].read_text())
        top = set(_top_level(tree))
        return {n for node, names in _imports(module, tree) if node in top for n in names}

    assert PREPARE_MODULE in imports_at_top("ms_transfer.models")
    missing = [m for m in MODULES if m.startswith("ms_transfer.") and not m.startswith(("ms_transfer.core",
                                                                                        "ms_transfer.models"))
               and m != PREPARE_MODULE
               and any(n.split(".")[0] == "mindspore" for n in imports_at_top(m))
               and PREPARE_MODULE not in imports_at_top(m)]
    assert not missing, f"these import MindSpore without {PREPARE_MODULE} (the oneDNN cap): {missing}"


# --- in fresh processes ---------------------------------------------------------------------------------------

_CONV = """
import numpy as np
import mindspore as ms
from mindspore import nn
conv = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=1, has_bias=False)
conv(ms.Tensor(np.ones((1, 4, 8, 8), np.float32))).asnumpy()
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ISA_VARS}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=ROOT, env={**clean, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_onednn_reads_its_isa_cap_at_the_first_kernel_not_at_import():
    """Why the import order does not matter: the cap set after ``import mindspore`` (before a kernel) is the one
    oneDNN uses (its verbose log names the ISA in effect). ``DNNL_MAX_CPU_ISA`` is the spelling every oneDNN reads
    (oneDNN 2.2, bundled with MindSpore 2.7, does not know ``ONEDNN_``); SSE4.1 is below every x86-64 CPU's own."""
    out = _python("import os\nimport mindspore\nos.environ['DNNL_MAX_CPU_ISA'] = 'SSE41'\n" + _CONV,
                  ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    isa = [line for line in out.stdout.splitlines() if ",info,cpu,isa:" in line]
    assert isa and "SSE4.1" in isa[0], out.stdout[-2000:]


def test_importing_the_models_applies_the_onednn_decision_whatever_came_first():
    """``from ms_transfer.models import create_model`` alone (and after ``import mindspore``) leaves the decided
    cap in the environment before any cell has run."""
    for first in ("", "import mindspore"):
        out = _python(f"""
            import os
            {first}
            from ms_transfer.models import create_model
            from ms_transfer.mindspore_backend import onednn
            print("ISA", *[os.environ.get(var) for var in {ISA_VARS!r}], onednn.decide(None).isa)
        """)
        line = next(line for line in out.stdout.splitlines() if line.startswith("ISA "))
        *applied, decided = line.split()[1:]
        assert applied == [decided] * len(ISA_VARS), (first, line)


def test_importing_the_models_makes_cpu_dispatch_synchronous_before_any_kernel():
    """On the CPU, operators run in the calling thread (``mindspore.runtime.launch_blocking``; why: the module
    docstring of ``ms_transfer.mindspore_backend.context``), set at import because it only works before the first
    kernel; a plain MindSpore process keeps its asynchronous default, so the flag read here is ours."""
    read = "from mindspore.runtime.executor import RuntimeConf\nprint('BLOCKING', RuntimeConf.get_instance().is_launch_blocking())"
    plain = _python("import mindspore\n" + read)
    ours = _python("from ms_transfer.models import create_model\n" + read)
    assert "BLOCKING False" in plain.stdout and "BLOCKING True" in ours.stdout, (plain.stdout[-500:], ours.stdout[-500:])


#: old module paths kept for users (README, earlier examples): the moved module itself, not a copy
OLD_PATHS = {"ms_transfer.context": "ms_transfer.mindspore_backend.context",
             "ms_transfer.optim": "ms_transfer.mindspore_backend.optim",
             "ms_transfer.onednn": "ms_transfer.mindspore_backend.onednn"}


def test_old_module_paths_are_the_moved_modules_and_the_package_loads_no_framework():
    """``import ms_transfer`` and ``ms_transfer.mindspore_backend`` load no framework; each old path is the same
    module object as its new one (so ``ms_transfer.optim.TorchAdam`` works and a monkeypatch of either name is seen
    by both); ``ms_transfer.onednn`` still loads no MindSpore."""
    out = _python(f"""
        import importlib, sys
        import ms_transfer, ms_transfer.mindspore_backend, ms_transfer.onednn
        print("FRAMEWORKS", sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))
        for old, new in {OLD_PATHS!r}.items():
            assert importlib.import_module(old) is importlib.import_module(new), old
        from ms_transfer.optim import TorchAdam
        from ms_transfer.context import set_context
        assert TorchAdam is ms_transfer.mindspore_backend.optim.TorchAdam and ms_transfer.context is sys.modules[
            "ms_transfer.mindspore_backend.context"]
        print("SAME")
    """)
    assert "FRAMEWORKS []" in out.stdout and "SAME" in out.stdout, out.stdout[-2000:]


def _cap_below_this_cpu() -> Tuple[str, str]:
    """A cap under this CPU's own ISA and the name oneDNN's verbose log gives it: AVX2 where the CPU has AVX-512
    (the cap the project applies), else SSE4.1 (below every x86-64 CPU's own)."""
    avx512 = " avx512f" in Path("/proc/cpuinfo").read_text()
    return ("AVX2", "AVX2") if avx512 else ("SSE41", "SSE4.1")


def _isa_in_effect(out: subprocess.CompletedProcess) -> str:
    """The ISA oneDNN's verbose log reports (``dnnl_verbose,info,cpu,isa:`` or its oneDNN 3 spelling)."""
    isa = [line.split(",info,cpu,isa:", 1)[1] for line in out.stdout.splitlines() if ",info,cpu,isa:" in line]
    assert isa, out.stdout[-2000:]
    return isa[0]


def test_a_decided_cap_is_the_isa_oneDNN_runs():
    """The decision applied by ``ms_transfer.mindspore_backend.context`` is the one MindSpore's oneDNN runs, not just
    the one logged: with the decision forced to a cap, a conv's verbose log reports that ISA (not AVX-512). Before the
    cap was written as ``DNNL_MAX_CPU_ISA`` too, MindSpore 2.7.2's oneDNN 2.2 ignored it and reported AVX-512."""
    cap, shown = _cap_below_this_cpu()
    out = _python(textwrap.dedent(f"""
        from ms_transfer.mindspore_backend import onednn
        onednn.decide = lambda user_isa=None: onednn.Decision({cap!r}, "forced by the test")
        import ms_transfer.mindspore_backend.context
        assert ms_transfer.mindspore_backend.context.DECISION.isa == {cap!r}
    """) + _CONV, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1")
    isa = _isa_in_effect(out)
    assert shown in isa and "AVX-512" not in isa, isa


@pytest.mark.parametrize("user_var", ISA_VARS)
def test_a_users_cap_under_either_spelling_is_the_isa_oneDNN_runs(user_var):
    """A cap the user exported under either spelling wins over the decision and holds whichever spelling the
    bundled oneDNN reads (it is copied to the unset one, never overwritten)."""
    cap, shown = _cap_below_this_cpu()
    out = _python(textwrap.dedent(f"""
        import os
        from ms_transfer.models import create_model
        from ms_transfer.mindspore_backend import context
        assert context.USER_ISA == {cap!r} and context.DECISION.reason == "set by the user", context.DECISION
        print("VARS", *[os.environ.get(var) for var in {ISA_VARS!r}])
    """) + _CONV, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1", **{user_var: cap})
    assert f"VARS {cap} {cap}" in out.stdout, out.stdout[-2000:]
    isa = _isa_in_effect(out)
    assert shown in isa and "AVX-512" not in isa, isa


def test_a_users_cap_is_never_overwritten():
    """Both spellings exported with different values: the package changes neither (each oneDNN reads its own)."""
    out = _python(f"""
        import os
        import ms_transfer.mindspore_backend.context
        from ms_transfer.mindspore_backend.context import apply_onednn_cap
        from ms_transfer.mindspore_backend import onednn
        apply_onednn_cap(onednn.Decision("AVX2", "a decision the user's export must beat"))
        print("VARS", *[os.environ.get(var) for var in {ISA_VARS!r}])
    """, ONEDNN_MAX_CPU_ISA="SSE41", DNNL_MAX_CPU_ISA="AVX")
    assert "VARS SSE41 AVX" in out.stdout, out.stdout[-2000:]


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """The core's plots draw on plain Figures: importing the loop and plotting neither loads pyplot nor picks a
    backend (a library must not switch a notebook's). Importing the loop does not import matplotlib at all (~0.3-0.5
    s that evaluate, predict and every data-parallel rank would pay without plotting)."""
    out = _python(f"""
        import sys
        from ms_transfer.core import loop
        from ms_transfer.core.plots import plot_curves
        print("matplotlib at import" if "matplotlib" in sys.modules else "no matplotlib at import")
        import matplotlib
        plot_curves([{{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_acc": 0.5}}], {str(tmp_path / "c.png")!r})
        print("pyplot" if "matplotlib.pyplot" in sys.modules else "no-pyplot", matplotlib.get_backend())
    """, MPLBACKEND="template")
    assert out.stdout.split()[-2:] == ["no-pyplot", "template"], out.stdout
    assert "no matplotlib at import" in out.stdout, out.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
