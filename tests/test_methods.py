"""The method registry: presets, lookup errors, needs flags, term values against the pure losses."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn import methods
from llm_unlearn.config import MethodConfig
from llm_unlearn.errors import ConfigError
from llm_unlearn.losses import (
    answer_kl,
    dpo_loss,
    gradient_ascent_loss,
    npo_loss,
    sequence_log_probs,
    simnpo_loss,
    token_nll,
)
from llm_unlearn.methods import (
    RETAIN_NLL,
    ForwardOutputs,
    Hyperparams,
    SideOutputs,
    Term,
    get_method,
    list_methods,
    register_method,
    resolve_hyperparams,
)

PRESETS = ["grad_ascent", "grad_diff", "grad_ascent_kl", "npo", "npo_rt", "npo_kl", "simnpo", "idk_nll", "idk_dpo"]


def _side(seed: int, with_ref: bool = False) -> SideOutputs:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 6, 7, generator=g)
    labels = torch.randint(0, 7, (3, 6), generator=g)
    labels[:, :2] = -100  # prompt
    labels[0, 4:] = -100  # padding of a shorter row
    logp, n = sequence_log_probs(logits, labels)
    side = SideOutputs(labels, logp, n, logits)
    if with_ref:
        side.ref_logits = torch.randn(3, 6, 7, generator=g)
        side.ref_logp = sequence_log_probs(side.ref_logits, labels)[0]
    return side


@pytest.fixture
def out() -> ForwardOutputs:
    return ForwardOutputs(forget=_side(0, True), retain=_side(1, True), forget_idk=_side(2, True))


def test_presets_registered():
    assert set(PRESETS) <= set(list_methods())
    for name in PRESETS:
        m = get_method(name)
        assert m.name == name and m.formula and m.paper.startswith(("Maini", "Zhang", "Fan"))


def test_unknown_method_names_close_matches():
    with pytest.raises(ConfigError, match=r"unknown method 'npo_rtt'.*'npo_rt'"):
        get_method("npo_rtt")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_method("npo", RETAIN_NLL)


def test_needs_flags():
    assert not get_method("simnpo").needs_reference
    assert not get_method("grad_diff").needs_reference
    assert get_method("npo").needs_reference and not get_method("npo").needs_reference_logits
    assert get_method("npo_kl").needs_reference_logits
    assert get_method("grad_ascent_kl").needs_reference_logits
    assert get_method("idk_dpo").needs_idk and get_method("idk_dpo").needs_reference
    assert get_method("idk_nll").needs_idk and not get_method("idk_nll").needs_reference
    assert not get_method("npo").needs_retain and get_method("npo_rt").needs_retain


def test_defaults():
    assert get_method("npo").defaults.beta == 0.1
    simnpo = get_method("simnpo").defaults
    assert (simnpo.beta, simnpo.simnpo_gamma) == (2.5, 0.0)
    assert get_method("grad_diff").defaults.retain_weight == 1.0
    assert get_method("grad_ascent").defaults.retain_weight is None
    assert "beta=0.1" in get_method("npo_rt").describe_defaults()


def test_term_values_match_pure_losses(out):
    f, r, idk = out.forget, out.retain, out.forget_idk
    hp = Hyperparams(beta=0.3, simnpo_gamma=0.2, retain_weight=1.0)
    cases = {
        "grad_ascent": gradient_ascent_loss(f.logits, f.labels),
        "npo": npo_loss(f.logp, f.ref_logp, 0.3),
        "simnpo": simnpo_loss(f.logp, f.num_tokens, 0.3, 0.2),
        "idk_nll": token_nll(idk.logits, idk.labels),
        "idk_dpo": dpo_loss(idk.logp, idk.ref_logp, f.logp, f.ref_logp, 0.3),
    }
    for name, expected in cases.items():
        assert get_method(name).forget_term(out, hp).item() == pytest.approx(expected.item(), abs=1e-5), name
    nll = token_nll(r.logits, r.labels).item()
    kl = answer_kl(r.logits, r.ref_logits, r.labels).item()
    assert get_method("grad_diff").retain_term(out, hp).item() == pytest.approx(nll, abs=1e-5)
    assert get_method("npo_kl").retain_term(out, hp).item() == pytest.approx(kl, abs=1e-5)
    assert get_method("npo").retain_term is None


def test_resolve_hyperparams_overrides_and_warns():
    hp = resolve_hyperparams(get_method("npo_rt"), MethodConfig(beta=0.5, retain_weight=2))
    assert (hp.beta, hp.retain_weight, hp.forget_weight) == (0.5, 2.0, 1.0)
    with pytest.warns(UserWarning, match="method.beta=0.5 is not used by method 'grad_diff'"):
        hp = resolve_hyperparams(get_method("grad_diff"), MethodConfig(beta=0.5))
    assert hp.beta is None


def test_register_new_method_is_one_function_plus_one_entry(out):
    def squared_nll(o: ForwardOutputs, hp: Hyperparams) -> torch.Tensor:
        return token_nll(o.forget.logits, o.forget.labels) ** 2

    term = Term("sq", squared_nll, side="forget", unit="tokens", needs=("forget",), formula="NLL(forget)^2")
    try:
        m = register_method("test_squared", term, RETAIN_NLL, paper="test")
        assert get_method("test_squared") is m
        assert m.formula == "gamma * NLL(forget)^2 + alpha * NLL(retain)"
        assert m.defaults.retain_weight == 1.0 and not m.needs_reference
        expected = token_nll(out.forget.logits, out.forget.labels).item() ** 2
        assert m.forget_term(out, m.defaults).item() == pytest.approx(expected, rel=1e-5)
    finally:
        methods._REGISTRY.pop("test_squared", None)


def test_term_validation():
    with pytest.raises(ValueError, match="side"):
        Term("x", lambda o, h: o, side="nope", unit="tokens", needs=(), formula="")
    with pytest.raises(ValueError, match="unknown needs"):
        Term("x", lambda o, h: o, side="forget", unit="tokens", needs=("forget.logits_of_mars",), formula="")
    npo_like = Term(
        "x", lambda o, h: o, side="forget", unit="sequences", needs=("forget",), formula="", params=("beta",)
    )
    with pytest.raises(ValueError, match="reads beta"):
        register_method("test_no_beta", npo_like)
    assert "test_no_beta" not in list_methods()
