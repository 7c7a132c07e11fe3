"""Writes py38_names.json, the standard library's names that Python 3.8
lacks, for test_py38.py, from typeshed's stdlib stubs:

    python3 tests/py38_names_gen.py TYPESHED/stdlib > tests/py38_names.json

typeshed marks a name added in Python 3.N with `if sys.version_info >=
(3, N):`; a name defined only under such a guard with N >= 9 is new
("module": {"name": N}; "methods": {"name": N} for class attributes whose
name no class has without a guard). typeshed has dropped Python 3.8, so its
stubs hold no (3, 9) guards: the names of 3.9 are listed by hand in
test_py38.py. The copy used was the one bundled with jedi 0.20.0."""

import ast
import json
import os
import sys


def _guard(test):
    """N of `sys.version_info >= (3, N)`, else None."""
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.GtE)
            and isinstance(test.left, ast.Attribute) and test.left.attr == "version_info"):
        c = test.comparators[0]
        if isinstance(c, ast.Tuple) and len(c.elts) >= 2 and isinstance(c.elts[1], ast.Constant):
            return c.elts[1].value
    return None


def _defined(stmt):
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    if isinstance(stmt, ast.ImportFrom):
        # In a stub only "import X as X" re-exports X.
        return [a.asname for a in stmt.names if a.asname == a.name]
    return []


def _scan(body, since, new, old, classes, stars):
    """Fills new (name: {versions}) and old (names without a guard) of one
    scope; classes gets (new, old) of each class in it, stars (module,
    since) of each `from module import *`."""
    for s in body:
        if isinstance(s, ast.If):
            n = _guard(s.test)
            _scan(s.body, max(since, n) if n is not None and n >= 9 else since, new, old, classes, stars)
            _scan(s.orelse, since, new, old, classes, stars)
            continue
        if isinstance(s, ast.ImportFrom) and any(a.name == "*" for a in s.names):
            stars.append((s.level, s.module or "", since))
        for name in _defined(s):
            if since >= 9:
                new.setdefault(name, set()).add(since)
            else:
                old.add(name)
        if isinstance(s, ast.ClassDef):
            cnew, cold = {}, set()
            _scan(s.body, since, cnew, cold, classes, [])
            classes.append((cnew, cold))


def _absolute(package, level, module, since):
    base = package.split(".")
    if level > 1:
        base = base[: -(level - 1)]
    return (".".join(base + [module]) if level else module).strip("."), since


def main(stdlib):
    scopes, methods, old_methods = {}, {}, set()
    for root, dirs, files in os.walk(stdlib):
        dirs.sort()
        for f in sorted(files):
            if not f.endswith(".pyi"):
                continue
            path = os.path.join(root, f)
            mod = os.path.relpath(path, stdlib)[:-4].replace(os.sep, ".")
            if mod.endswith(".__init__"):
                mod = mod[: -len(".__init__")]
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            new, old, classes, stars = {}, set(), [], []
            _scan(tree.body, 0, new, old, classes, stars)
            package = mod if f == "__init__.pyi" else mod.rpartition(".")[0]
            scopes[mod] = (new, old, [_absolute(package, *s) for s in stars])
            for cnew, cold in classes:
                old_methods |= cold
                for n, v in cnew.items():
                    if n not in cold and not n.startswith("_"):
                        methods[n] = min(methods.get(n, 99), min(v))
    modules = {}
    for mod, (new, old, stars) in scopes.items():
        names = {n: min(v) for n, v in new.items() if n not in old}
        for target, since in stars:
            # A star import re-exports the target's names: all of them new
            # when the import is guarded, else the target's new ones.
            tnew, told, _ = scopes.get(target, ({}, set(), []))
            for n in told | set(tnew):
                v = since if n in told else max(since, min(tnew[n]))
                if v >= 9 and n not in old:
                    names[n] = min(names.get(n, 99), v)
        names = {n: v for n, v in names.items() if not n.startswith("_")}
        if names:
            modules[mod] = dict(sorted(names.items()))
    methods = {n: v for n, v in sorted(methods.items()) if n not in old_methods}
    json.dump({"modules": dict(sorted(modules.items())), "methods": methods}, sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
