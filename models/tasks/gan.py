"""The adversarial training step shared by every GAN task (codec, TSE fine-tuning).

One optimizer step of a generator trained against discriminators, in the order of HiFi-GAN's
``train.py`` and descriptinc/descript-audio-codec's ``scripts/train.py`` (read for
understanding, not copied):

1. discriminator update: ``discriminator_loss(D(real), D(fake.detach()))``;
2. generator update: the task's reconstruction loss plus ``adversarial_weight * L_adv`` and
   ``feature_matching_weight * L_fm`` through the *frozen* discriminators (gradients flow through
   them to the generator but do not accumulate in their parameters), with the real features
   recomputed after the update and without a graph.

Before ``disc_warmup_steps`` optimizer steps (the one name for the warm-up in every GAN task's
config) only the reconstruction loss is optimised and the discriminators are not touched. The
metric keys are the same in both phases, because the loop averages metrics per key.

The discriminators run outside ``ctx.forward`` in fp32; with two optimizers a task is not wrapped
in DDP and the loop averages each optimizer's gradients across workers (``sync_grads``). The
loss functions are ``models/losses/codec.py``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from models.losses.codec import (
    AdversarialKind,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from models.tasks.base import StepContext


@contextlib.contextmanager
def frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Let gradients flow *through* ``modules`` without accumulating into their parameters."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def adversarial_train_step(
    ctx: StepContext,
    discriminators: Sequence[nn.Module],
    real: torch.Tensor,
    fake: torch.Tensor,
    reconstruction_loss: torch.Tensor,
    *,
    active: bool,
    kind: AdversarialKind,
    adversarial_weight: float,
    feature_matching_weight: float,
    relative_feature_matching: bool = False,
) -> dict[str, float]:
    """One GAN optimizer step (see the module docstring); steps ``"discriminator"`` (when
    ``active``) and ``"generator"``.

    ``real``: target audio and ``fake``: the generator's output with its graph, in whatever
    shape the discriminators take (``(B, T)`` or ``(B, 1, T)``); ``reconstruction_loss``: the
    task's weighted scalar. ``active`` is False during the warm-up. Returns ``loss`` (the
    generator loss optimised), ``adv``, ``feature_matching``, ``d_loss`` (zeros when inactive)
    and ``gan_active``.
    """
    zero = torch.zeros(())
    d_loss, adv, fm = zero, zero, zero
    g_loss = reconstruction_loss
    if active:
        real, fake = real.float(), fake.float()
        d_loss = discriminator_loss(
            [d(real) for d in discriminators], [d(fake.detach()) for d in discriminators], kind
        )
        ctx.backward("discriminator", d_loss)
        ctx.step_optimizer("discriminator")
        # generator: gradients must reach the generator only, not the discriminators
        with frozen(discriminators):
            d_fake = [d(fake) for d in discriminators]
            with torch.no_grad():
                d_real = [d(real) for d in discriminators]  # after the update, no graph
            adv = generator_adversarial_loss(d_fake, kind)
            fm = feature_matching_loss(d_real, d_fake, relative=relative_feature_matching)
        g_loss = reconstruction_loss + adversarial_weight * adv + feature_matching_weight * fm
    ctx.backward("generator", g_loss)
    ctx.step_optimizer("generator")
    return {
        "loss": float(g_loss.detach()),
        "adv": float(adv.detach()),
        "feature_matching": float(fm.detach()),
        "d_loss": float(d_loss.detach()),
        "gan_active": float(active),
    }
