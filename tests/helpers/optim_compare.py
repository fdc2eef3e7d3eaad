"""Comparing fp32 optimizer state with torch.optim within a few ulps of what the last update added up."""
from __future__ import annotations

import torch

EPS32 = torch.finfo(torch.float32).eps
# four steps, each within a couple of ulps of its operands, and the earlier steps' rounding carried along
FP32_ULPS = 8


class Snapshot:
    """The reference's params, grads and state just before its last step: the operands of the last update.

    A few fp32 ulps of those operands is what a fused kernel may differ from torch.optim by (another order of
    multiply-adds, contracted FMAs); where the update cancels (a weight or momentum close to zero) that is many
    ulps of the result, so results are compared against the operands' magnitude, not their own.
    """

    def __init__(self, opt, params):
        self.p = [p.detach().clone() for p in params]
        self.grad = [p.grad.detach().clone() for p in params]
        self.state = [{k: v.detach().clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]

    def scale(self, i, key):
        """Elementwise magnitude of what the last update of ``state[key]`` (or the param, key "p") added up."""
        if key in ("exp_avg_sq", "max_exp_avg_sq"):
            # beta2 * v + (1 - beta2) * g * g: non-negative terms, no cancellation; a wrong coefficient (the
            # fp32 `1 - beta2` bias, 1.3e-5 relative) is ~100 ulps of the result and must show
            return self.state[i].get(key, torch.zeros_like(self.p[i])).abs()
        prev = self.p[i] if key == "p" else self.state[i].get(key, torch.zeros_like(self.p[i]))
        return prev.abs() + self.grad[i].abs() + self.p[i].abs()


def assert_ulps(actual, expected, scale, ulps, what=""):
    """fp32: |actual - expected| <= ulps * eps * max(|expected|, scale), elementwise."""
    bound = ulps * EPS32 * torch.maximum(expected.abs(), scale)
    err = (actual.float() - expected.float()).abs()
    bad = err > bound
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(f"{what}: {int(bad.sum())}/{bad.numel()} elements beyond {ulps} ulps; e.g. flat index "
                             f"{i}: {actual.flatten()[i].item()!r} vs {expected.flatten()[i].item()!r} "
                             f"(operands' scale {scale.flatten()[i].item():.3g})")


def assert_state_close(ref, ours, ref_p, our_p, tol, ulps=FP32_ULPS):
    """Params and every state tensor of ``ours`` against ``ref``.

    fp32 tensors of a run whose reference recorded ``ref.before_last`` (a `Snapshot`) are compared within
    ``ulps`` of the last update's operands; the rest, and every tensor when ``tol`` is given as
    ``dict(rtol=, atol=)``, with ``torch.testing.assert_close``; ``tol`` may also be a dtype -> dict map.
    """
    snap = getattr(ref, "before_last", None)
    for i, (rp, op) in enumerate(zip(ref_p, our_p)):
        pairs = [("p", op.detach(), rp.detach())]
        pairs += [(k, ours.state[op][k].to(device=v.device, dtype=v.dtype), v)
                  for k, v in ref.state[rp].items() if v is not None]
        for key, got, want in pairs:
            what = f"param {i} {key}"
            if snap is not None and want.dtype == torch.float32 and "rtol" not in tol:
                assert_ulps(got, want, snap.scale(i, key), ulps, what=what)
            elif torch.is_floating_point(want):
                t = tol if "rtol" in tol else tol[want.dtype]
                torch.testing.assert_close(got, want, **t, msg=lambda m, w=what: f"{w}: {m}")
            else:
                assert torch.equal(got, want), what
