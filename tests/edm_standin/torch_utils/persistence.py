"""Stand-in for EDM's pickling of network classes by source (see ../README.md); written for the tests."""

import copy
import inspect
import sys
import types
import uuid

_SOURCES = {}  # module name -> source text, for modules rebuilt from a pickle (they have no file)


def persistent_class(cls):
    module_name = cls.__module__
    src = _SOURCES.get(module_name) or inspect.getsource(sys.modules[module_name])

    class Persistent(cls):
        _orig_module_src = src
        _orig_class_name = cls.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        @property
        def init_args(self):
            return copy.deepcopy(self._init_args)

        @property
        def init_kwargs(self):
            return copy.deepcopy(self._init_kwargs)

        def __reduce__(self):
            meta = {"module_src": self._orig_module_src, "class_name": self._orig_class_name,
                    "state": dict(self.__dict__)}
            return _reconstruct, (meta,)

    Persistent.__name__ = cls.__name__
    Persistent.__qualname__ = cls.__qualname__
    Persistent.__module__ = module_name
    return Persistent


def _reconstruct(meta):
    name = "_imported_module_" + uuid.uuid4().hex
    module = types.ModuleType(name)
    sys.modules[name] = module
    _SOURCES[name] = meta["module_src"]
    exec(meta["module_src"], module.__dict__)
    cls = getattr(module, meta["class_name"])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"])
    return obj
