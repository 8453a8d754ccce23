"""The registry of unlearning methods: name -> forget term, retain term, defaults, what each needs. No model calls.

A method is `total = forget_weight * forget_term + retain_weight * retain_term` (gamma and alpha in the issue).
Terms are functions over the forward results the trainer computed (`ForwardOutputs`); they call the pure
losses of `llm_unlearn.losses` and never a model. Adding a method is one term function plus one
`register_method` call::

    def my_forget(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
        return npo_loss(out.forget.logp, out.forget.ref_logp, hp.beta) ** 2

    register_method(
        "my_npo",
        Term("my_npo", my_forget, side="forget", unit="sequences", needs=("forget", "forget.ref_logp"), formula="..."),
        RETAIN_NLL,
        defaults=Hyperparams(beta=0.1),
        paper="...",
    )

What a term `needs` (the trainer computes exactly these):
    "forget"               forward of the forget batch with gradient (otherwise it runs under no_grad, for metrics)
    "forget_idk"           forward of (forget question, refusal answer) with gradient
    "retain"               forward of the retain batch with gradient
    "forget.ref_logp"      reference summed log-probs of the forget answers (precomputable)
    "forget_idk.ref_logp"  reference summed log-probs of the refusal answers (precomputable)
    "retain.ref_logits"    reference logits on the retain batch, each step under no_grad (KL)
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from llm_unlearn.errors import ConfigError
from llm_unlearn.losses import answer_kl, dpo_loss, nll_from_log_probs, npo_loss, simnpo_loss

__all__ = [
    "NEEDS",
    "RETAIN_KL",
    "RETAIN_NLL",
    "ForwardOutputs",
    "Hyperparams",
    "Method",
    "SideOutputs",
    "Term",
    "get_method",
    "list_methods",
    "register_method",
    "resolve_hyperparams",
]

NEEDS = frozenset({"forget", "forget_idk", "retain", "forget.ref_logp", "forget_idk.ref_logp", "retain.ref_logits"})
SIDES = ("forget", "forget_idk", "retain")
UNITS = ("sequences", "tokens")


@dataclass
class SideOutputs:
    """Forward results for one sub-batch (forget, forget_idk or retain).

    Attributes:
        labels: `[B, T]`, -100 on prompt and padding.
        logp: `[B]` summed answer log-probs under the trained model.
        num_tokens: `[B]` answer token counts.
        logits: `[B, T, V]`, kept only when a term needs them (KL), else None.
        ref_logp: `[B]` reference summed log-probs, when needed.
        ref_logits: `[B, T, V]` reference logits (no grad), when needed.
    """

    labels: torch.Tensor
    logp: torch.Tensor
    num_tokens: torch.Tensor
    logits: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    ref_logits: torch.Tensor | None = None


@dataclass
class ForwardOutputs:
    """What the trainer computed for one batch; the input of every term function."""

    forget: SideOutputs
    retain: SideOutputs | None = None
    forget_idk: SideOutputs | None = None


@dataclass(frozen=True)
class Hyperparams:
    """Method hyperparameters. In a registry entry, None means "not used by this method".

    Attributes:
        beta: inverse temperature of NPO / SimNPO / DPO.
        simnpo_gamma: SimNPO reward margin.
        forget_weight: gamma, weight of the forget term.
        retain_weight: alpha, weight of the retain term.
        learning_rate: a suggested learning rate with LoRA (a hint for configs; not applied automatically).
    """

    beta: float | None = None
    simnpo_gamma: float | None = None
    forget_weight: float = 1.0
    retain_weight: float | None = None
    learning_rate: float = 1e-4


TermFn = Callable[[ForwardOutputs, Hyperparams], torch.Tensor]


@dataclass(frozen=True)
class Term:
    """One loss term of a method.

    Attributes:
        name: short name (shown by `llm-unlearn methods`).
        fn: `(ForwardOutputs, Hyperparams) -> scalar`, a mean over `unit`s of `side` in the batch it sees.
        side: the sub-batch whose sequences/tokens the mean runs over; the trainer uses it (with `unit`) to rescale
            the mean for gradient accumulation and several processes.
        unit: "sequences" or "tokens".
        needs: what the trainer must compute (see the module docstring).
        params: the `Hyperparams` fields the term reads (besides the weights).
        formula: one line, for humans.
    """

    name: str
    fn: TermFn
    side: str
    unit: str
    needs: tuple[str, ...]
    formula: str
    params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"term {self.name}: side {self.side!r} is not one of {SIDES}")
        if self.unit not in UNITS:
            raise ValueError(f"term {self.name}: unit {self.unit!r} is not one of {UNITS}")
        unknown = set(self.needs) - NEEDS
        if unknown:
            raise ValueError(f"term {self.name}: unknown needs {sorted(unknown)}; valid: {sorted(NEEDS)}")

    def __call__(self, out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
        return self.fn(out, hp)


@dataclass(frozen=True)
class Method:
    """A registry entry. Build it with `register_method`."""

    name: str
    forget_term: Term
    retain_term: Term | None
    defaults: Hyperparams
    paper: str
    formula: str
    needs: frozenset[str] = field(default_factory=frozenset)

    @property
    def needs_reference(self) -> bool:
        """True when any term reads the reference model (log-probs or logits)."""
        return any(n.endswith((".ref_logp", ".ref_logits")) for n in self.needs)

    @property
    def needs_reference_logits(self) -> bool:
        """True when the reference must run on the retain batch every step (cannot be precomputed)."""
        return "retain.ref_logits" in self.needs

    @property
    def needs_idk(self) -> bool:
        """True when the method trains on refusal answers (IdkNLL, IdkDPO)."""
        return "forget_idk" in self.needs

    @property
    def needs_retain(self) -> bool:
        return self.retain_term is not None

    def describe_defaults(self) -> str:
        """`beta=0.1, forget_weight=1.0, ...`: the defaults this method uses."""
        values = dataclasses.asdict(self.defaults)
        return ", ".join(f"{k}={v:g}" for k, v in values.items() if v is not None)


_REGISTRY: dict[str, Method] = {}


def register_method(
    name: str,
    forget_term: Term,
    retain_term: Term | None = None,
    *,
    defaults: Hyperparams | None = None,
    paper: str = "",
    formula: str | None = None,
) -> Method:
    """Add a method to the registry.

    Args:
        name: unique method name (what `method.name` in a recipe selects).
        forget_term: the term on the forget set.
        retain_term: the term on the retain set, or None.
        defaults: default hyperparameters; `retain_weight` defaults to 1.0 when there is a retain term.
        paper: reference (link).
        formula: one line; default `gamma * forget + alpha * retain` from the terms' formulas.

    Raises:
        ValueError: if `name` is already registered, or a term parameter has no default.
    """
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered")
    defaults = defaults or Hyperparams()
    if retain_term is not None and defaults.retain_weight is None:
        defaults = dataclasses.replace(defaults, retain_weight=1.0)
    if retain_term is None and defaults.retain_weight is not None:
        raise ValueError(f"method {name!r}: retain_weight given but there is no retain term")
    terms = [t for t in (forget_term, retain_term) if t is not None]
    for term in terms:
        for param in term.params:
            if getattr(defaults, param) is None:
                raise ValueError(f"method {name!r}: term {term.name} reads {param} but defaults.{param} is None")
    if formula is None:
        formula = f"gamma * {forget_term.formula}"
        if retain_term is not None:
            formula += f" + alpha * {retain_term.formula}"
    needs = frozenset(n for t in terms for n in t.needs)
    method = Method(name, forget_term, retain_term, defaults, paper, formula, needs)
    _REGISTRY[name] = method
    return method


def get_method(name: str) -> Method:
    """Look a method up by name.

    Raises:
        ConfigError: for an unknown name, naming the closest registered names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"method.name: unknown method {name!r}{hint} (registered: {', '.join(list_methods())})"
        ) from None


def list_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_REGISTRY)


def resolve_hyperparams(method: Method, config: object | None = None) -> Hyperparams:
    """The method's defaults overridden by the non-null fields of a `MethodConfig` (or any object with them).

    A value the method does not use (e.g. `beta` for grad_ascent) is ignored with a warning.
    """
    values = dataclasses.asdict(method.defaults)
    for key in ("beta", "simnpo_gamma", "forget_weight", "retain_weight"):
        given = getattr(config, key, None) if config is not None else None
        if given is None:
            continue
        if values[key] is None:
            warnings.warn(f"method.{key}={given} is not used by method {method.name!r}; ignored", stacklevel=2)
            continue
        values[key] = float(given)
    return Hyperparams(**values)


# --------------------------------------------------------------------------------------------
# Terms
# --------------------------------------------------------------------------------------------


def _ga(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return -nll_from_log_probs(out.forget.logp, out.forget.num_tokens)


def _npo(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return npo_loss(out.forget.logp, out.forget.ref_logp, hp.beta)


def _simnpo(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return simnpo_loss(out.forget.logp, out.forget.num_tokens, hp.beta, hp.simnpo_gamma)


def _idk_nll(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return nll_from_log_probs(out.forget_idk.logp, out.forget_idk.num_tokens)


def _idk_dpo(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    f, idk = out.forget, out.forget_idk
    return dpo_loss(idk.logp, idk.ref_logp, f.logp, f.ref_logp, hp.beta)


def _retain_nll(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return nll_from_log_probs(out.retain.logp, out.retain.num_tokens)


def _retain_kl(out: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
    return answer_kl(out.retain.logits, out.retain.ref_logits, out.retain.labels)


GA = Term("ga", _ga, "forget", "tokens", ("forget",), "-NLL(forget)")
NPO = Term(
    "npo",
    _npo,
    "forget",
    "sequences",
    ("forget", "forget.ref_logp"),
    "-(2/beta) mean log sigmoid(-beta (log pi_theta - log pi_ref)(forget))",
    ("beta",),
)
SIMNPO = Term(
    "simnpo",
    _simnpo,
    "forget",
    "sequences",
    ("forget",),
    "-(2/beta) mean log sigmoid(-beta log pi_theta(forget)/|y| - gamma_s)",
    ("beta", "simnpo_gamma"),
)
IDK_NLL = Term("idk_nll", _idk_nll, "forget_idk", "tokens", ("forget_idk",), "NLL(forget question, refusal)")
IDK_DPO = Term(
    "idk_dpo",
    _idk_dpo,
    "forget",
    "sequences",
    ("forget", "forget_idk", "forget.ref_logp", "forget_idk.ref_logp"),
    "-(2/beta) mean log sigmoid(beta [(log pi_theta - log pi_ref)(refusal) - (log pi_theta - log pi_ref)(true)])",
    ("beta",),
)
RETAIN_NLL = Term("nll", _retain_nll, "retain", "tokens", ("retain",), "NLL(retain)")
RETAIN_KL = Term(
    "kl", _retain_kl, "retain", "tokens", ("retain", "retain.ref_logits"), "KL(pi_ref || pi_theta)(retain answers)"
)

TOFU = "Maini et al. 2024, TOFU, https://arxiv.org/abs/2401.06121"
NPO_PAPER = "Zhang et al. 2024, NPO, https://arxiv.org/abs/2404.05868"


def _register_presets(entries: Iterable[tuple]) -> None:
    for name, forget, retain, defaults, paper in entries:
        register_method(name, forget, retain, defaults=defaults, paper=paper)


_register_presets(
    [
        ("grad_ascent", GA, None, Hyperparams(learning_rate=5e-5), TOFU),
        ("grad_diff", GA, RETAIN_NLL, Hyperparams(learning_rate=5e-5), TOFU),
        ("grad_ascent_kl", GA, RETAIN_KL, Hyperparams(learning_rate=5e-5), TOFU),
        ("npo", NPO, None, Hyperparams(beta=0.1), NPO_PAPER),
        ("npo_rt", NPO, RETAIN_NLL, Hyperparams(beta=0.1), NPO_PAPER),
        ("npo_kl", NPO, RETAIN_KL, Hyperparams(beta=0.1), NPO_PAPER),
        (
            "simnpo",
            SIMNPO,
            RETAIN_NLL,
            Hyperparams(beta=2.5, simnpo_gamma=0.0),
            "Fan et al. 2024, SimNPO, https://arxiv.org/abs/2410.07163",
        ),
        ("idk_nll", IDK_NLL, RETAIN_NLL, Hyperparams(), TOFU),
        ("idk_dpo", IDK_DPO, RETAIN_NLL, Hyperparams(beta=0.1), TOFU + "; DPO: https://arxiv.org/abs/2305.18290"),
    ]
)
