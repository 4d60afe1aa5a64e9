"""FusedTanhNormal draws and scores exactly what TorchRL's TanhNormal does, gradients included."""
import pytest
import torch
from torchrl.modules import TanhNormal

from torchrl_sacflow._fast.tanh_normal import FusedTanhNormal

# tests of the speed path itself: run with it on also under --fast-paths off
pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _params(seed=0, shape=(6, 3)):
    g = torch.Generator().manual_seed(seed)
    loc = (torch.randn(*shape, generator=g) * 3).requires_grad_()  # some saturated tanh
    scale = (torch.rand(*shape, generator=g) + 0.05).requires_grad_()
    return loc, scale


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (-2.0, 0.5), "vector"])
@pytest.mark.parametrize("method", ["rsample_and_log_prob", "sample_and_log_prob"])
@pytest.mark.parametrize("sample_shape", [(), (2,)])
def test_fused_equals_torchrl_tanh_normal(bounds, method, sample_shape):
    if bounds == "vector":
        low, high = torch.tensor([-1.0, -3.0, 0.0]), torch.tensor([1.0, 2.0, 4.0])
    else:
        low, high = bounds
    results = []
    for cls in (FusedTanhNormal, TanhNormal):
        loc, scale = _params()
        dist = cls(loc, scale, low=low, high=high)
        torch.manual_seed(3)
        action, log_prob = getattr(dist, method)(sample_shape)
        (log_prob.sum() + (action.sum() if action.requires_grad else 0)).backward()
        results.append((action, log_prob, loc.grad, scale.grad))
    for mine, theirs in zip(*results):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    action = results[0][0]
    assert action.shape == (*sample_shape, 6, 3)
    assert action.requires_grad == (method == "rsample_and_log_prob")
    lo, hi = torch.as_tensor(low), torch.as_tensor(high)
    assert ((action >= lo) & (action <= hi)).all()


@pytest.mark.parametrize("method", ["rsample", "sample"])
def test_fused_draws_equal_torchrl_draws(method):
    results = []
    for cls in (FusedTanhNormal, TanhNormal):
        loc, scale = _params(1)
        torch.manual_seed(4)
        action = getattr(cls(loc, scale, low=-3.0, high=1.0), method)((2,))
        if action.requires_grad:
            action.pow(2).sum().backward()
        results.append((action, loc.grad, scale.grad))
    assert (results[0][0].requires_grad, results[1][0].requires_grad) == (method == "rsample",) * 2
    for mine, theirs in zip(*results):
        if theirs is None:
            assert mine is None
        else:
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)


def test_unfused_configurations_use_the_parent():
    loc, scale = _params()
    d = FusedTanhNormal(loc, scale, tanh_loc=True)
    assert not d._fusable()
    torch.manual_seed(0)
    a, lp = d.rsample_and_log_prob()
    torch.manual_seed(0)
    b, lp2 = TanhNormal(loc, scale, tanh_loc=True).rsample_and_log_prob()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(lp, lp2)
    assert FusedTanhNormal(loc, scale)._fusable()


def test_safe_tanh_matches_torchrl_values_and_gradients_including_saturation():
    from torchrl.modules.distributions.utils import safetanh_noeps

    from torchrl_sacflow._fast.tanh_normal import safe_tanh

    x = torch.cat([torch.linspace(-30, 30, 61), torch.randn(40)]).requires_grad_()
    outs = []
    for fn in (safe_tanh, safetanh_noeps):
        y = fn(x)
        (grad,) = torch.autograd.grad((y * torch.arange(101.0)).sum(), x)
        outs.append((y.detach(), grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert outs[0][0].abs().max() < 1.0  # clamped: atanh stays finite
    # under vmap it defers to TorchRL's function (which supports functorch transforms)
    torch.testing.assert_close(torch.vmap(safe_tanh)(x.detach().view(1, -1))[0], outs[1][0])


def _compare_with_torchrl(low, high, loc, scale, event_dims=None):
    """Everything a user reads off the distribution equals TorchRL's for the same arguments."""
    mine = FusedTanhNormal(loc, scale, low=low, high=high, event_dims=event_dims)
    theirs = TanhNormal(loc, scale, low=low, high=high, event_dims=event_dims)
    assert (mine.batch_shape, mine.event_shape) == (theirs.batch_shape, theirs.event_shape)
    torch.testing.assert_close(mine.deterministic_sample, theirs.deterministic_sample)
    value = theirs.sample()
    torch.testing.assert_close(mine.log_prob(value), theirs.log_prob(value))
    outs = []
    for d in (mine, theirs):
        torch.manual_seed(11)
        outs.append(d.rsample_and_log_prob((2,)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    return mine


@pytest.mark.parametrize("event_dims", [None, 0])
def test_repeated_construction_equals_torchrl(event_dims):
    low, high = torch.tensor([-1.0, -3.0, 0.0]), torch.tensor([1.0, 2.0, 4.0])
    loc, scale = _params(2)
    _compare_with_torchrl(low, high, loc, scale, event_dims)
    _compare_with_torchrl(low, high, loc.detach() * 0.5, scale.detach(), event_dims)
    _compare_with_torchrl(low, high, loc[:2], scale[:2], event_dims)  # another parameter shape
    high.mul_(3.0)  # bounds changed in place are used as they are now
    second = _compare_with_torchrl(low, high, loc, scale)
    assert second.deterministic_sample.abs().max() > 1.0


def test_invalid_bounds_and_parameters_still_raise_on_every_construction():
    loc, scale = _params(4)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="strictly greater"):
            FusedTanhNormal(loc, scale, low=1.0, high=-1.0)
    FusedTanhNormal(loc, scale, low=-1.0, high=1.0)
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    try:
        bad = loc.detach().clone()
        bad[0, 0] = float("nan")
        for cls in (TanhNormal, FusedTanhNormal):
            with pytest.raises(ValueError):
                cls(bad, scale, low=-1.0, high=1.0)
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)
