"""@record: the part of @dataclass the runtime uses, without importing it.

`import dataclasses` pulls in inspect, ast, dis and typing: about 7-9 ms of
every `python -m runtime` start, more than a container start.  The runtime's
plain data classes (Isolation, Plan, Config, Mount, Limits) only need an
__init__ from their annotated fields and defaults (Factory(list) for a fresh
mutable default, like field(default_factory=list)), __post_init__, value
equality, a readable repr and replace().  Annotations stay unevaluated
strings (from __future__ import annotations); a field annotated ClassVar is
not a field.
"""
from __future__ import annotations


class Factory:
    """A default made afresh for every instance (dataclasses' default_factory)."""
    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def record(cls):
    names = tuple(n for n, t in cls.__dict__.get("__annotations__", {}).items()
                  if not str(t).startswith("ClassVar"))
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}
    for n, d in defaults.items():
        if isinstance(d, Factory):
            delattr(cls, n)  # as dataclasses does with field(default_factory=...)
    post_init = getattr(cls, "__post_init__", None)

    def __init__(self, *args, **kw):
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, {len(args)} given")
        for n, v in zip(names, args, strict=False):  # len checked above
            if n in kw:
                raise TypeError(f"{cls.__name__}() got two values for {n!r}")
            setattr(self, n, v)
        for n in names[len(args):]:
            if n in kw:
                v = kw.pop(n)
            elif n in defaults:
                d = defaults[n]
                v = d.make() if isinstance(d, Factory) else d
            else:
                raise TypeError(f"{cls.__name__}() missing the argument {n!r}")
            setattr(self, n, v)
        if kw:
            raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kw)}")
        if post_init is not None:
            post_init(self)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __repr__(self):
        return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    cls.__init__, cls.__eq__, cls.__repr__, cls.__hash__ = __init__, __eq__, __repr__, None
    cls.__record_fields__ = names
    return cls


def replace(obj, **changes):
    """A copy of obj with some fields changed (dataclasses.replace; runs __post_init__)."""
    return obj.__class__(**{n: changes.pop(n) if n in changes else getattr(obj, n)
                            for n in obj.__record_fields__}, **changes)
