"""Method names as they appear in flags and tables -> method objects.

Methods register themselves here: the core's own (G2RPO and its ablation) below, every other package in its
``__init__`` (``baselines/__init__.py`` holds one ``register`` line per baseline), so the core never imports the
methods built on it. Whoever runs every method (``benchmarks``) imports those packages first.

Each name belongs to a family whose knobs a preset sets (``g2rpo-wo-mgai`` takes the ``g2rpo`` knobs, then fixes
Lambda = {1}); a preset's ``ALL_FAMILIES`` knobs come first for every family, so a new method trains under the
preset's shared rules (the pocket learning rate) without a line of its own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .granular import G2RPO
from .method import Method
from .presets import ALL_FAMILIES

@dataclass(frozen=True)
class Entry:
    """A registered method."""

    name: str
    """Its name in ``--methods`` and in every record."""
    method: type
    """The ``Method`` subclass, built as ``method(method.config_class(**knobs))``; a sweep reads each knob's type
    from that config dataclass."""
    title: str
    """Its name in tables and figures."""
    family: str
    """Whose preset knobs it takes (default: its own name)."""
    fixed: dict = field(default_factory=dict)
    """Knobs it pins over the preset's and a sweep's (``g2rpo-wo-mgai``: granular_list = (1,))."""
    order: int = 50
    """Row position in tables, lower first (baselines 10-30, G2RPO last, as in the paper's tables); ties: registration."""
    default: bool = True
    """In the runner's default ``--methods``; a method added later joins once the committed pocket results hold it
    (until then ``--methods all`` or its name runs it), so the README's default command makes the committed tables."""


METHODS: dict[str, Entry] = {}


def register(name: str, method: type, title: str, family: str | None = None, fixed: dict | None = None,
             order: int = 50, default: bool = True) -> Entry:
    """Add a method under ``name``; a name registered twice is an error (two packages claiming one flag)."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice ({METHODS[name].method.__module__} and {method.__module__})")
    METHODS[name] = Entry(name, method, title, family or name, dict(fixed or {}), order, default)
    return METHODS[name]


register("g2rpo", G2RPO, "G²RPO", order=100)
register("g2rpo-wo-mgai", G2RPO, "G²RPO w/o MGAI", family="g2rpo", fixed={"granular_list": (1,)}, order=90)


def default_methods() -> list[str]:
    """The runner's default ``--methods``: registered methods with ``default`` set, in registration order."""
    return [n for n, e in METHODS.items() if e.default]


def table_order() -> list[str]:
    """Registered names in the order tables show them."""
    return sorted(METHODS, key=lambda n: (METHODS[n].order, list(METHODS).index(n)))


def entry(name: str) -> Entry:
    if name not in METHODS:
        hint = "" if "flowgrpo" in METHODS else " (the baselines register when the package `baselines` is imported)"
        raise KeyError(f"unknown method {name!r}; choose from {', '.join(METHODS)}{hint}")
    return METHODS[name]


def knobs_for(name: str, preset_knobs: dict | None) -> dict:
    """The preset's knobs for ``name``'s family: the ``ALL_FAMILIES`` ones, then the family's own."""
    knobs = preset_knobs or {}
    return knobs.get(ALL_FAMILIES, {}) | knobs.get(entry(name).family, {})


def make_method(name: str, preset_knobs: dict | None = None, lr: float | None = None, **overrides) -> Method:
    """Build a method by name: official defaults <- the preset's knobs for its family <- explicit overrides <- the
    entry's fixed knobs; ``lr`` (a rate set explicitly: --lr, a sweep) replaces the learning rate of the AdamW
    settings those give."""
    e = entry(name)
    knobs = knobs_for(name, preset_knobs) | overrides | e.fixed
    if lr is not None:  # rebuilt with the settings as a knob: a rate given explicitly (Flow-GRPO checks it)
        knobs |= {"optim": dataclasses.replace(e.method(e.method.config_class(**knobs)).optim, lr=lr)}
    m = e.method(e.method.config_class(**knobs))
    m.name = name
    return m
