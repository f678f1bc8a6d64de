"""The adversarial style search shared by the stylizers with a style VAE (RAIN, AdaConv + VAE).

A stylizer that can `render(content_features, z)` an image from a style latent z gets `explore`: z moves
up the gradient of a downstream (segmentation) loss of the rendered image, to find styles the network
finds hard (ASM's rule z <- z + (step / loss) * grad). One copy of the rule for every such stylizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cmr_lib.core.errors import check_int
from cmr_lib.models.adain import content_features, grain_noise

RULES = ("asm", "sign", "plain")


@dataclass
class Exploration:
    """What `explore` found: the final latent, the stylized images after each iteration, the losses."""

    z: torch.Tensor
    images: list            # [(B, 1, H, W)] after iterations 0..N (index 0: before any step)
    losses: list            # downstream loss at each of those


class LatentStyleSearch:
    """Mixin for a stylizer with `encoder` (frozen VGG), `vae` (a StyleVAE), `style_code(style) -> (mu, logvar)`
    and `render(content_feat, z) -> image in [0, 1]`."""

    def stylize(self, content: torch.Tensor, style: torch.Tensor, *, sample: bool = False, generator=None):
        """Content restyled like `style` (same batch size, or one style for all): the latent mean, or a sample."""
        mu, logvar = self.style_code(style)
        z = self.vae.sample(mu, logvar, generator) if sample else mu
        if z.shape[0] == 1 and content.shape[0] > 1:
            z = z.expand(content.shape[0], *z.shape[1:])
        return self.render(self.content_features(content), z, noise=grain_noise(self, content, generator))

    def content_features(self, content: torch.Tensor):
        """What `render` needs of the content (relu4_1 features; a model with skips returns every level)."""
        return content_features(self.encoder, content, getattr(self, "skips", False))

    def explore(self, content: torch.Tensor, z: torch.Tensor, loss_fn, *, iterations: int, step: float, rule: str,
                content_feat: torch.Tensor | None = None, noise=None) -> Exploration:
        """Adversarial style search: move z up the gradient of `loss_fn(stylized)` `iterations` times.

        rule 'asm': z <- z + (step / loss) * dL/dz (the ASM reference, step 20); 'sign': z <- z + step *
        sign(dL/dz) (FGSM-like); 'plain': z <- z + step * dL/dz. The stylizer is not updated; `loss_fn`
        must be differentiable in the image (e.g. a segmentation loss of a fixed network). `noise`: the grain's
        noise map (adain.grain_noise), the same at every step so that only the style moves.
        """
        if rule not in RULES:
            raise ValueError(f"parameter 'rule' = {rule!r}: choose 'asm', 'sign' or 'plain'")
        check_int("iterations", iterations)
        if content_feat is None:
            with torch.no_grad():
                content_feat = self.content_features(content)
        z = z.detach().clone()
        images, losses = [], []
        for i in range(iterations + 1):
            last = i == iterations
            with torch.no_grad() if last else torch.enable_grad():     # the last image needs no gradient
                z.requires_grad_(not last)
                img = self.render(content_feat, z, noise=noise)
                loss = loss_fn(img)
            images.append(img.detach())
            losses.append(float(loss.detach()))
            if last:
                break
            (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                if rule == "asm":
                    z = z + (step / max(float(loss), 1e-8)) * grad
                elif rule == "sign":
                    z = z + step * grad.sign()
                else:
                    z = z + step * grad
        return Exploration(z=z.detach(), images=images, losses=losses)
