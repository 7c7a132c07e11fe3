"""What runs in the Python worker: pickled by value with cloudpickle, so
that the machines need cloudpickle but not this package."""


def make_call(function):
    """A one-argument function for the worker: its argument is a base64
    pickle of (args, kwargs), its result a base64 pickle of function's
    result. function is a callable or a "package.module.function" name,
    imported in the worker."""

    def meadowrun_call(payload):
        import base64
        import pickle

        import cloudpickle

        f = function
        if isinstance(f, str):
            f = resolve(f)
        args, kwargs = pickle.loads(base64.b64decode(payload))
        return base64.b64encode(cloudpickle.dumps(f(*args, **kwargs))).decode()

    return meadowrun_call


def resolve(name):
    """Imports "package.module.function" (or "module.Class.method": the
    longest importable prefix is the module)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as e:
            if e.name and ".".join(parts[:i]).startswith(e.name):
                continue
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError("meadowrun: cannot import %s: no module of it is importable in the worker" % name)
