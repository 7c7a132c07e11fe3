"""Python 3.8 compatibility of the client package and of meadowrun's Python
worker, checked without a Python 3.8 interpreter (there is none on the
machines that run these tests).

Every checked file is parsed with ast.parse(src, feature_version=(3, 8)),
which refuses the syntax of later versions that CPython's parser knows
(match, except*, parenthesized context managers, ...), and its tree is
searched for what parses under 3.8 but fails there when it runs:

- modules added in 3.9 or later (zoneinfo, graphlib, tomllib, ...);
- standard library names added in 3.9 or later, through a module
  (asyncio.to_thread, functools.cache, socket.recv_fds, ...), imported
  from one, or builtins (aiter, ExceptionGroup): the 3.9 names listed by
  hand below, the 3.10+ ones from typeshed's version guards
  (py38_names.json, written by py38_names_gen.py);
- methods added in 3.9 or later on any object (str.removeprefix,
  Path.is_relative_to, int.bit_count, ...), by name;
- subscripted builtin and standard library classes (list[int],
  dict[str, int], collections.abc.Iterator[str], re.Pattern[str]) and `|`
  between types (int | None) in annotations or at run time: 3.8 evaluates
  annotations when it defines a function, unless the module has
  `from __future__ import annotations`; annotations written as strings
  are checked too, as typing.get_type_hints would evaluate them;
- `|` merging dicts ({...} | {...}, d |= {...}) where an operand is
  visibly a dict;
- keyword arguments added in 3.9 or later (zip(strict=),
  dataclass(slots=), Popen(user=), ...) and the one-argument
  traceback.format_exception(exc) of 3.10;
- decorators that are not a dotted name or a call of one (PEP 614).

What it cannot see: a 3.9+ method called under a name it does not list,
a value's type (d1 | d2 of two variables), behaviour that changed
without a name changing. test_the_checker_finds_what_it_looks_for shows
each check firing."""

import ast
import json
import os
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON)


def checked_files():
    """The client package, its build backend, its examples, these tests
    and the Python worker."""
    out = []
    for d in ("meadowrun", "_build", "examples", "tests"):
        for root, dirs, files in os.walk(os.path.join(PYTHON, d)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            out += [os.path.join(root, f) for f in sorted(files) if f.endswith(".py")]
    out.append(os.path.join(REPO, "internal", "pyworker", "meadowrun_worker.py"))
    return out


NEW_MODULES = {
    "zoneinfo": 9, "graphlib": 9, "asyncio.mixins": 10, "tomllib": 11, "wsgiref.types": 11,
    "asyncio.taskgroups": 11, "asyncio.timeouts": 11, "importlib.resources.abc": 11,
    "annotationlib": 14, "compression": 14, "string.templatelib": 14, "concurrent.interpreters": 14,
}

# What's New in Python 3.9: typeshed no longer marks these.
NEW_IN_39 = {
    "asyncio": ["to_thread", "PidfdChildWatcher"],
    "functools": ["cache"],
    "math": ["lcm", "nextafter", "ulp"],
    "os": ["pidfd_open", "waitstatus_to_exitcode", "P_PIDFD", "CLD_KILLED", "CLD_STOPPED"],
    "random": ["randbytes"],
    "signal": ["pidfd_send_signal"],
    "socket": ["send_fds", "recv_fds", "CAN_RAW_JOIN_FILTERS", "CAN_J1939", "IPPROTO_UDPLITE"],
    "sys": ["platlibdir"],
    "typing": ["Annotated"],
    "types": ["GenericAlias"],
    "ast": ["unparse"],
    "importlib.resources": ["files", "as_file"],
    "argparse": ["BooleanOptionalAction"],
    "time": ["CLOCK_TAI"],
    "tracemalloc": ["reset_peak"],
    "xml.etree.ElementTree": ["indent"],
    "gc": ["is_finalized"],
    "fcntl": ["F_OFD_GETLK", "F_OFD_SETLK", "F_OFD_SETLKW", "F_GETPATH"],
    "keyword": ["issoftkeyword", "softkwlist"],
    "curses": ["get_escdelay", "set_escdelay", "get_tabsize", "set_tabsize"],
}
NEW_METHODS_39 = ["removeprefix", "removesuffix", "is_relative_to", "with_stem", "shutdown_default_executor", "randbytes"]

# (callee, keyword, version): a dotted callee is matched against the
# standard library name called, a plain one against the last name.
NEW_KEYWORDS = [
    ("zip", "strict", 10), ("dataclass", "slots", 10), ("dataclass", "kw_only", 10), ("dataclass", "match_args", 10),
    ("dataclass", "weakref_slot", 11), ("field", "kw_only", 10), ("TemporaryDirectory", "ignore_cleanup_errors", 10),
    ("TemporaryDirectory", "delete", 12), ("NamedTemporaryFile", "delete_on_close", 12), ("rmtree", "onexc", 12),
    ("basicConfig", "encoding", 9), ("basicConfig", "errors", 9), ("shutdown", "cancel_futures", 9), ("ast.dump", "indent", 9),
    ("get_type_hints", "include_extras", 9), ("cancel", "msg", 9), ("write_text", "newline", 10), ("realpath", "strict", 10),
    ("signature", "eval_str", 10), ("bisect", "key", 10), ("bisect_left", "key", 10), ("bisect_right", "key", 10),
    ("insort", "key", 10), ("ArgumentParser", "exit_on_error", 9),
] + [(c, k, v) for c in ("Popen", "run", "call", "check_call", "check_output")
     for k, v in (("user", 9), ("group", 9), ("extra_groups", 9), ("umask", 9), ("pipesize", 10), ("process_group", 11))] + [
    (h, "usedforsecurity", 9) for h in ("new", "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s")]

BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
STDLIB_GENERICS = {
    "collections": {"deque", "defaultdict", "OrderedDict", "Counter", "ChainMap"},
    "re": {"Pattern", "Match"},
    "queue": {"Queue", "SimpleQueue", "LifoQueue", "PriorityQueue"},
    "asyncio": {"Future", "Task", "Queue"},
    "os": {"PathLike", "DirEntry"},
    "contextlib": {"AbstractContextManager", "AbstractAsyncContextManager"},
    "functools": {"partial", "partialmethod", "cached_property"},
    "dataclasses": {"Field"},
    "subprocess": {"Popen", "CompletedProcess"},
    "types": {"MappingProxyType"},
    "weakref": {"ref", "WeakSet", "WeakKeyDictionary", "WeakValueDictionary"},
    "tempfile": {"TemporaryDirectory"},
    "concurrent.futures": {"Future"},
}
TYPE_NAMES = BUILTIN_GENERICS | {"int", "str", "float", "bytes", "bool", "complex", "object"}


def _load_names():
    with open(os.path.join(HERE, "py38_names.json"), encoding="utf-8") as f:
        data = json.load(f)
    modules = {m: dict(names) for m, names in data["modules"].items()}
    for m, names in NEW_IN_39.items():
        for n in names:
            modules.setdefault(m, {})[n] = 9
    methods = dict(data["methods"])
    for n in NEW_METHODS_39:
        methods[n] = 9
    return modules, methods


class _Checker(ast.NodeVisitor):
    def __init__(self, modules, methods, own_names):
        self.modules, self.methods, self.own = modules, methods, own_names
        self.aliases = {}  # local name -> module or module.attr it stands for
        self.problems = []
        self.future_annotations = False
        self.in_annotation = False

    def problem(self, node, what):
        self.problems.append("line %d: %s" % (getattr(node, "lineno", 0), what))

    # Names and where they come from.

    def dotted(self, node):
        """The standard library name node stands for (a module, or
        module.attr...), or None."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id]] + parts[::-1])

    def check_module(self, node, mod):
        for m, v in NEW_MODULES.items():
            if mod == m or mod.startswith(m + "."):
                self.problem(node, "module %s is new in 3.%d" % (m, v))

    def check_name(self, node, full):
        mod, _, name = full.rpartition(".")
        v = self.modules.get(mod, {}).get(name)
        if v is not None:
            self.problem(node, "%s is new in 3.%d" % (full, v))

    def visit_Import(self, node):
        for a in node.names:
            self.check_module(node, a.name)
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node):
        if node.level or not node.module:
            return
        if node.module == "__future__" and any(a.name == "annotations" for a in node.names):
            self.future_annotations = True
        self.check_module(node, node.module)
        for a in node.names:
            self.check_module(node, node.module + "." + a.name)
            self.check_name(node, node.module + "." + a.name)
            self.aliases[a.asname or a.name] = node.module + "." + a.name

    def visit_Name(self, node):
        if node.id not in self.own and node.id not in self.aliases:
            self.check_name(node, "builtins." + node.id)

    def visit_Attribute(self, node):
        full = self.dotted(node)
        if full is not None:
            self.check_name(node, full)
        elif node.attr in self.methods and node.attr not in self.own:
            self.problem(node, ".%s() is new in 3.%d" % (node.attr, self.methods[node.attr]))
        self.generic_visit(node)

    # Generics and unions.

    def is_generic(self, node):
        if isinstance(node, ast.Name) and node.id in BUILTIN_GENERICS and node.id not in self.own:
            return node.id
        full = self.dotted(node)
        if full is None:
            return None
        mod, _, name = full.rpartition(".")
        if mod in ("collections.abc", "typing.re") or name in STDLIB_GENERICS.get(mod, ()):
            return full
        return None

    def evaluated(self):
        return not (self.in_annotation and self.future_annotations)

    def visit_Subscript(self, node):
        g = self.is_generic(node.value)
        if g and self.evaluated():
            self.problem(node, "%s[...] needs 3.9 (use typing's %s, or a string annotation)" % (g, g.split(".")[-1].capitalize()))
        self.generic_visit(node)

    def is_type(self, node):
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        if isinstance(node, ast.Name) and node.id in TYPE_NAMES:
            return True
        full = self.dotted(node)
        return bool(full and full.startswith("typing."))

    def visit_BinOp(self, node):
        if isinstance(node.op, ast.BitOr):
            if self.evaluated() and (self.in_annotation or self.is_type(node.left) or self.is_type(node.right)):
                self.problem(node, "X | Y between types needs 3.10 (use typing.Union or Optional)")
            if self.is_dict(node.left) or self.is_dict(node.right):
                self.problem(node, "dict | dict needs 3.9 (use {**a, **b})")
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        if isinstance(node.op, ast.BitOr) and self.is_dict(node.value):
            self.problem(node, "d |= {...} needs 3.9 (use d.update(...))")
        self.generic_visit(node)

    @staticmethod
    def is_dict(node):
        return isinstance(node, (ast.Dict, ast.DictComp)) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict")

    def annotation(self, node):
        if node is None:
            return
        was, self.in_annotation = self.in_annotation, True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A string annotation: what get_type_hints would evaluate.
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                node = None
        if node is not None:
            self.visit(node)
        self.in_annotation = was

    def visit_arg(self, node):
        self.annotation(node.annotation)

    def visit_AnnAssign(self, node):
        self.annotation(node.annotation)
        for n in (node.target, node.value):
            if n is not None:
                self.visit(n)

    def visit_FunctionDef(self, node):
        self.annotation(node.returns)
        for d in node.decorator_list:
            if not self.plain_decorator(d):
                self.problem(d, "a decorator that is not a dotted name or a call of one needs 3.9")
        self.visit(node.args)
        for s in node.body:
            self.visit(s)
        for d in node.decorator_list:
            self.visit(d)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for d in node.decorator_list:
            if not self.plain_decorator(d):
                self.problem(d, "a decorator that is not a dotted name or a call of one needs 3.9")
        self.generic_visit(node)

    @staticmethod
    def plain_decorator(d):
        if isinstance(d, ast.Call):
            d = d.func
        while isinstance(d, ast.Attribute):
            d = d.value
        return isinstance(d, ast.Name)

    def visit_Call(self, node):
        f = node.func
        last = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        full = self.dotted(f) or (f.id if isinstance(f, ast.Name) else None)
        for callee, kw, v in NEW_KEYWORDS:
            if (full == callee if "." in callee else last == callee) and any(k.arg == kw for k in node.keywords):
                self.problem(node, "%s(%s=...) is new in 3.%d" % (callee, kw, v))
        if full in ("traceback.format_exception", "traceback.print_exception") and len(node.args) + len(node.keywords) == 1:
            self.problem(node, "%s(exc) with one argument needs 3.10 (pass type(exc), exc, exc.__traceback__)" % full)
        if isinstance(f, ast.Name) and f.id in ("isinstance", "issubclass") and len(node.args) == 2:
            a = node.args[1]
            if isinstance(a, ast.BinOp) and isinstance(a.op, ast.BitOr):
                self.problem(node, "%s(x, A | B) needs 3.10 (use a tuple)" % f.id)
        self.generic_visit(node)


def _own_names(tree):
    """Names the file defines itself (functions, classes, attributes,
    parameters, variables): never taken for the standard library's."""
    own = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(n.name)
        elif isinstance(n, ast.arg):
            own.add(n.arg)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            own.add(n.id)
        elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            own.add(n.attr)
    return own


def check_source(src, filename="<src>", own=()):
    """The 3.8 problems of src, as 'line N: what' strings; own names
    are the project's (defined in the other checked files)."""
    try:
        tree = ast.parse(src, filename, feature_version=(3, 8))
    except SyntaxError as e:
        return ["line %s: not Python 3.8 syntax: %s" % (e.lineno, e.msg)]
    modules, methods = _load_names()
    c = _Checker(modules, methods, _own_names(tree) | set(own))
    # Imports first, so that a name used above its import still resolves.
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names):
            c.future_annotations = True
    c.visit(tree)
    return c.problems


class Python38Test(unittest.TestCase):
    def test_every_module_is_python_3_8(self):
        files = checked_files()
        self.assertGreater(len(files), 10)
        self.assertIn("meadowrun_worker.py", [os.path.basename(f) for f in files])
        srcs = {}
        for path in files:
            with open(path, encoding="utf-8") as f:
                srcs[path] = f.read()
        own = set()
        for src in srcs.values():
            own |= _own_names(ast.parse(src))
        found = []
        for path, src in srcs.items():
            for p in check_source(src, path, own):
                found.append("%s: %s" % (os.path.relpath(path, REPO), p))
        self.assertEqual(found, [], "\n".join(found))

    def test_the_checker_finds_what_it_looks_for(self):
        cases = {
            "match x:\n    case 1:\n        pass\n": "not Python 3.8 syntax",
            "with (open('a') as a, open('b') as b):\n    pass\n": "not Python 3.8 syntax",
            "s = 'ab'.removeprefix('a')\n": ".removeprefix() is new in 3.9",
            "x = line.removesuffix('\\n')\n": ".removesuffix() is new in 3.9",
            "def f(x: list[int]) -> None: pass\n": "list[...] needs 3.9",
            "def f() -> 'dict[str, int]': pass\n": "dict[...] needs 3.9",
            "X = tuple[int, str]\n": "tuple[...] needs 3.9",
            "import collections.abc\ndef f(x: collections.abc.Iterator[str]): pass\n": "collections.abc.Iterator[...] needs 3.9",
            "import functools\n@functools.cache\ndef f(): pass\n": "functools.cache is new in 3.9",
            "from functools import cache\n": "functools.cache is new in 3.9",
            "import asyncio\nasync def f():\n    await asyncio.to_thread(print)\n": "asyncio.to_thread is new in 3.9",
            "import zoneinfo\n": "module zoneinfo is new in 3.9",
            "from zoneinfo import ZoneInfo\n": "module zoneinfo is new in 3.9",
            "def f(x: int | None): pass\n": "X | Y between types needs 3.10",
            "from typing import Optional\nT = int | None\n": "X | Y between types needs 3.10",
            "ok = isinstance(1, int | str)\n": "isinstance(x, A | B) needs 3.10",
            "d = {'a': 1} | {'b': 2}\n": "dict | dict needs 3.9",
            "d |= {'b': 2}\n": "d |= {...} needs 3.9",
            "import socket\nsocket.recv_fds(s, 1, 4)\n": "socket.recv_fds is new in 3.9",
            "import asyncio\nasync def f():\n    async with asyncio.timeout(1): pass\n": "asyncio.timeout is new in 3.11",
            "n = (5).bit_count()\n": ".bit_count() is new in 3.10",
            "it = anext(x)\n": "builtins.anext is new in 3.10",
            "for a, b in zip(x, y, strict=True): pass\n": "zip(strict=...) is new in 3.10",
            "import dataclasses\n@dataclasses.dataclass(slots=True)\nclass A: pass\n": "dataclass(slots=...) is new in 3.10",
            "import traceback\ntraceback.format_exception(e)\n": "with one argument needs 3.10",
            "@buttons[0].clicked.connect\ndef f(): pass\n": "a decorator that is not a dotted name",
            "import os\nos.waitstatus_to_exitcode(s)\n": "os.waitstatus_to_exitcode is new in 3.9",
            "import ast\nast.dump(t, indent=2)\n": "ast.dump(indent=...) is new in 3.9",
        }
        for src, want in cases.items():
            with self.subTest(src=src):
                problems = check_source(src)
                self.assertTrue(any(want in p for p in problems), "%r: want %r, got %r" % (src, want, problems))

    def test_what_3_8_has_is_not_flagged(self):
        ok = textwrap.dedent("""
            from __future__ import annotations
            import json, os, sys, traceback, typing
            from typing import Dict, List, Optional
            def f(x: list[int], y: int | None) -> dict[str, int]:
                return {}
            def g(e: BaseException) -> List[str]:
                flags = os.O_RDONLY | os.O_CLOEXEC
                env = dict(os.environ)
                env["A"] = os.environ["HOME"]
                json.dump(env, sys.stdout, indent=2)
                return traceback.format_exception(type(e), e, e.__traceback__)
            name = "x".lstrip("a")
            if (n := len(sys.argv)) > 1:
                pass
        """)
        self.assertEqual(check_source(ok), [])


if __name__ == "__main__":
    unittest.main()
