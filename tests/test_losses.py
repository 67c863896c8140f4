import pytest
import torch

from mlc.modeling.losses import AsymmetricLoss, MaskedBCE


def _reference_asl(x, y, gn, gp, clip, eps=1e-5):
    p = torch.sigmoid(x)
    pn = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p
    L = y * torch.log(p.clamp(min=eps)) + (1 - y) * torch.log(pn.clamp(min=eps))
    w = torch.where(y == 1, (1 - p) ** gp, (1 - pn) ** gn)
    return -(L * w).sum() / x.shape[0] / x.shape[1] * 1000


def test_asl_matches_formula_and_official_reduction():
    torch.manual_seed(0)
    x, y = torch.randn(5, 7) * 3, (torch.rand(5, 7) > 0.6).float()
    for gn, gp, clip in ((2, 0, 0.0), (4, 1, 0.05), (0, 0, 0.0)):
        got = AsymmetricLoss(gamma_neg=gn, gamma_pos=gp, clip=clip)(x, y)
        torch.testing.assert_close(got, _reference_asl(x, y, gn, gp, clip))
    # gamma 0, no clip: 1000 x the element mean of BCE (up to the eps clamp)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
    torch.testing.assert_close(AsymmetricLoss(gamma_neg=0)(x, y), 1000 * bce, rtol=1e-4, atol=1e-3)


def test_focal_weight_detached_by_default():
    torch.manual_seed(1)
    x0 = torch.randn(3, 4) * 2
    y = (torch.rand(3, 4) > 0.5).float()
    grads = {}
    for detach in (True, False):
        x = x0.clone().requires_grad_()
        AsymmetricLoss(gamma_neg=2, detach_focal=detach)(x, y).backward()
        grads[detach] = x.grad
    # With w constant: positive dL/dx = p - 1 (gamma_pos 0); negative dL/dx = w p = p^2 * p; times 1000 / (B C)
    p = torch.sigmoid(x0)
    expected = torch.where(y == 1, p - 1, p ** 3) * 1000 / 12
    torch.testing.assert_close(grads[True], expected)
    assert not torch.allclose(grads[True], grads[False])


def test_unknown_targets_are_masked():
    x = torch.randn(2, 3)
    y = torch.tensor([[1.0, -1, 0], [0, 1, -1]])
    masked = AsymmetricLoss()(x, y)
    keep = y >= 0
    p = torch.sigmoid(x)
    yc = y.clamp(min=0)
    L = yc * torch.log(p.clamp(min=1e-5)) + (1 - yc) * torch.log((1 - p).clamp(min=1e-5))
    w = torch.where(yc == 1, torch.ones_like(p), p ** 2)
    manual = -(L * w * keep).sum() / 6 * 1000
    torch.testing.assert_close(masked, manual)
    unmasked = AsymmetricLoss(mask_unknown=False)(x, y)
    assert not torch.allclose(masked, unmasked)
    bce = MaskedBCE()(x, y)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x[keep], yc[keep])
    torch.testing.assert_close(bce, ref)


def test_ranking_loss_matches_the_pairwise_definition():
    from mlc.modeling.losses import RankingLoss
    s = torch.tensor([[0.9, 0.2, 0.5, 0.0], [0.1, 0.3, 0.2, 0.4]])
    t = torch.tensor([[1, 0, 0, -1], [0, 1, -1, -1]])
    # image 0: pos {0}, neg {1, 2}: hinges 1 + 0.2 - 0.9 = 0.3, 1 + 0.5 - 0.9 = 0.6 -> 0.9 / 2
    # image 1: pos {1}, neg {0}: 1 + 0.1 - 0.3 = 0.8 -> 0.8 / 1; column 3 (all unknown) dropped
    assert float(RankingLoss()(s, t)) == pytest.approx((0.45 + 0.8) / 2)


def test_bce_unknowns_masked_or_negative():
    from mlc.modeling.losses import MaskedBCE
    logits, t = torch.tensor([[2.0, -1.0]]), torch.tensor([[1, -1]])
    masked = float(MaskedBCE(True)(logits, t))
    as_negative = float(MaskedBCE(False)(logits, t))
    assert masked == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-2.0))))
    assert as_negative == pytest.approx((masked + float(torch.nn.functional.softplus(torch.tensor(-1.0)))) / 2)
