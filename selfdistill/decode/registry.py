"""The strategy registry: every decoding strategy is one :class:`Strategy` subclass, registered by name.

A strategy declares its options (:class:`Option`: default, check, help), whether it feeds ``<mtp>`` masks, its
setting name, and (for the engine) the block it feeds per pass and its acceptance rule. How it looks in plots and
which of its settings sweeps and benchmarks run live with the measuring (:mod:`selfdistill.eval.presentation`,
:mod:`selfdistill.eval.measured`). Everything that names strategies (``mtp_generate``, ``DecodeSetting``, the
entry points' options through :func:`with_options`, the sweep, the lm-eval model) reads this registry.

    make_strategy("conf_adapt", threshold=0.9)   # validated, immutable options; unknown options are refused
    strategy_names()                             # registration order: the order of reports and sweeps
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Option:
    """One option of a strategy: its default and a check returning an error message (``None`` when valid)."""

    name: str
    default: Any
    check: Callable[[Any], str | None]
    help: str = ""
    kind: Callable[[str], Any] = int  # parses a value given as text (lm-eval model_args), e.g. int, float


def positive_int(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be an int >= 1, got {value!r}"
    return None


def threshold_value(value) -> str | None:
    """A confidence threshold: a probability in [0, 1], the one rule of every entry point (NaN would decode
    greedily and a negative value accept every mask, silently; above 1 no mask prediction could pass, which is
    plain greedy decoding: ask for static k=1 instead)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not (
            0 <= value <= 1):
        return f"must be a probability in [0, 1], got {value!r}"
    return None


def optional_bool(value) -> str | None:
    if value is not None and not isinstance(value, bool):
        return f"must be true, false or None, got {value!r}"
    return None


def parse_bool(text: str) -> bool:
    """``true``/``false`` (any case, or 1/0) as given in text options; anything else is a ``ValueError``."""
    value = {"true": True, "1": True, "false": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"{text!r} is not true or false")
    return value


def optional_margin(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return f"must be an int >= 1 (or None for a fixed k_max - 1), got {value!r}"
    return None


class Strategy:
    """Base class: a decoding strategy with validated options (read them as attributes; instances are immutable).

    Class attributes a subclass sets: ``name`` (registry key), ``options``, ``baseline`` (decoded by
    ``model.generate``, not the engine), ``lossless``. Which of its settings sweeps and benchmarks run is
    measurement, kept with the measuring (:mod:`selfdistill.eval.measured`).
    """

    name: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    baseline: ClassVar[bool] = False
    lossless: ClassVar[bool] = False
    #: The confidence map a resolved unit applies (:meth:`resolve`); ``None`` for raw confidences.
    calibration = None

    def __init__(self, **values):
        declared = {o.name: o for o in self.options}
        for opt in self.options:
            value = values.get(opt.name)
            value = opt.default if value is None else value
            if (err := opt.check(value)) is not None:
                raise ValueError(f"{self.name} option {opt.name} {err}")
            object.__setattr__(self, opt.name, value)
        extra = sorted(k for k, v in values.items() if k not in declared and v is not None)
        if extra:
            raise ValueError(f"strategy {self.name!r} takes no option {', '.join(extra)} "
                             f"(its options: {', '.join(declared) or 'none'})")

    def __setattr__(self, key, value):
        raise AttributeError(f"{type(self).__name__} options are immutable")

    def values(self) -> dict:
        """The options as ``{name: value}``."""
        return {o.name: getattr(self, o.name) for o in self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values().items())})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.values().items())))

    def resolve(self, *, calibration=None) -> Strategy:
        """This setting as a model with ``calibration`` (its :class:`~selfdistill.models.calibration.ConfidenceMap`
        or ``None``) decodes it: the strategies that read confidences decide here whether they use the map."""
        return self

    @property
    def num_masks(self) -> int:
        """Masks appended per pass (``0``: plain next-token decoding)."""
        return 0

    @property
    def needs_mask_token(self) -> bool:
        return self.num_masks > 0

    @property
    def setting_name(self) -> str:
        """The label of this option set in sweeps, file names and benchmark tables (e.g. ``static_k3``)."""
        return self.name


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add ``cls`` to the registry under ``cls.name`` (a name is registered once)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"strategy {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load() -> None:
    from selfdistill.decode import strategies  # noqa: F401  (registers the built-in strategies)


def strategy_class(name: str) -> type[Strategy]:
    """The registered class ``name``; a ``ValueError`` naming the choices otherwise."""
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose from {tuple(_REGISTRY)}")
    return _REGISTRY[name]


def strategy_names(*, baselines: bool = True) -> tuple[str, ...]:
    """Registered names in registration order (``baselines=False``: only those the engine decodes)."""
    _load()
    return tuple(n for n, c in _REGISTRY.items() if baselines or not c.baseline)


def refuse_baseline(unit: Strategy, *, by: str, instead: str) -> None:
    """The one refusal of a ``model.generate`` baseline where only the engine decodes (``by``: what refuses it;
    ``instead``: what to use there)."""
    if unit.baseline:
        raise ValueError(f"{unit.name!r} is a model.generate baseline, which {by} does not decode: {instead}")


def make_strategy(name: str | Strategy, *, trained_k_max: int | None = None, **options) -> Strategy:
    """A validated strategy: ``options`` that are ``None`` take the default; undeclared ones are refused.

    ``trained_k_max``: the largest chunk the model was trained on (``trained_k_max_from(model)``; ``None``: unknown).
    When given, a strategy that takes ``k_max`` and was given none reads that many positions instead of its default:
    slots past it were never trained, so reading them costs compute and, where not verified, fidelity.
    """
    if isinstance(name, Strategy):
        if any(v is not None for v in options.values()):
            raise ValueError("options are given twice: pass a strategy name with options, or a Strategy alone")
        return name
    if trained_k_max is not None and options.get("k_max") is None and takes_option(name, "k_max"):
        options = options | {"k_max": trained_k_max}
    return strategy_class(name)(**options)


def resolve_strategy(name: str | Strategy, *, trained_k_max: int | None = None, calibration=None,
                     **options) -> Strategy:
    """:func:`make_strategy` for a known model, then :meth:`Strategy.resolve` against its confidence map: the one
    place a setting meets the model it decodes (``selfdistill.decode.engine.strategy_for`` reads both from it)."""
    return make_strategy(name, trained_k_max=trained_k_max, **options).resolve(calibration=calibration)


def declared_options() -> dict[str, Option]:
    """``{name: Option}``: every option some registered strategy declares (the first declaration; strategies that
    share an option name share its meaning), in registration order."""
    _load()
    out: dict[str, Option] = {}
    for cls in _REGISTRY.values():
        for opt in cls.options:
            out.setdefault(opt.name, opt)
    return out


def with_options(*names: str, note: str = ""):
    """Class decorator for a dataclass of settings (an entry point's options, a sweep grid): one field per option
    the registry declares (or only ``names``), default ``None`` (the strategy's own default), typed and helped as
    the strategy class declares it. The one home of an option stays its strategy class; no entry point writes a
    copy of it by hand (``tests/decode/test_option_homes.py`` checks). ``note``: added to each field's help (what
    the value means there, e.g. "for every setting that takes it")."""
    import dataclasses

    def decorate(cls):
        declared = declared_options()
        unknown = sorted(set(names) - set(declared))
        if unknown:
            raise ValueError(f"{cls.__name__}: no strategy declares the options {unknown}")
        fields = [(name, _field_type(opt) | None,
                   dataclasses.field(default=None, metadata={"help": opt.help + (f" ({note})" if note else "")}))
                  for name, opt in declared.items() if not names or name in names]
        params = cls.__dataclass_params__
        out = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), kw_only=True, frozen=params.frozen)
        out.__module__, out.__qualname__, out.__doc__ = cls.__module__, cls.__qualname__, cls.__doc__
        return out

    return decorate


def _field_type(opt: Option) -> type:
    return bool if opt.kind is parse_bool else opt.kind


def pop_options(values: dict) -> dict:
    """Remove every strategy option from ``values`` (keyword arguments that also hold other settings) and return
    them, text parsed by the option's ``kind``: ``None``, ``""`` and ``"None"`` are unset. Whether the strategy
    takes them is :func:`make_strategy`'s check."""
    out = {}
    for name, opt in declared_options().items():
        if name not in values:
            continue
        value = values.pop(name)
        if isinstance(value, str):
            text = value.strip()
            try:
                value = None if text in ("", "None") else opt.kind(text)
            except ValueError as err:
                raise ValueError(f"option {name}: {value!r} is not a valid {opt.kind.__name__}") from err
        out[name] = value
    return out


def takes_option(name: str, option: str) -> bool:
    """Whether the registered strategy ``name`` declares ``option``."""
    return any(o.name == option for o in strategy_class(name).options)
