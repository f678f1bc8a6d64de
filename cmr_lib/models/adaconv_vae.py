"""AdaConv + VAE: a trained AdaConv whose global style descriptor W is given RAIN's style VAE, so that the paper's
adversarial style search (RAIN's, models.style_search) works for predicted kernels too (its Section 7).

The flattened descriptor W (S*k*k) is standardised and encoded to a latent z (S); z decodes back to a W that
the kernel predictors turn into kernels. The VAE is RAIN's (`StyleVAE`: log-variance, standardised inputs,
the same KL and reconstruction losses and weights), and it is trained as RAIN's is: on the descriptors of a
frozen network, standardised once. Here that network is the trained AdaConv itself (training.stylizers
trains or reuses it first, then fits the VAE on its W over the style pool). Training the two jointly, with
the decoder fed the VAE's moving reconstruction, was measured first and failed on real data (docs/methods.md);
fitted on the frozen W, the decoded W keeps what AdaConv keeps (benchmarks/adaconv_vae_check.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cmr_lib.models.adaconv import AdaConv
from cmr_lib.models.rain import StyleVAE, kl_loss
from cmr_lib.models.style_search import LatentStyleSearch
from cmr_lib.models.vgg import VGGEncoder


class AdaConvVAE(LatentStyleSearch, AdaConv):
    """VGG encoder (frozen) + AdaConv's style encoder, kernel predictors and decoder (trained as AdaConv, then
    frozen) + a style VAE on W (the only part this class trains)."""

    kind = "adaconv-vae"

    def __init__(self, encoder: VGGEncoder, *, image_size: int, kernel_size: int = 3, style_dim: int = 512,
                 content_weight=1.0, style_weight=10.0, kl_weight=1.0, rec_weight=5.0, skips=False, grain=False):
        super().__init__(encoder, image_size=image_size, kernel_size=kernel_size, style_dim=style_dim,
                         content_weight=content_weight, style_weight=style_weight, skips=skips, grain=grain)
        self.w_shape = (self.style_dim, kernel_size, kernel_size)
        flat = self.style_dim * kernel_size * kernel_size
        self.vae = StyleVAE(style_dim=flat, latent_dim=self.style_dim, hidden=2 * self.style_dim)
        self.weights.update(kl=kl_weight, rec=rec_weight)

    def trainable(self):
        """The style VAE: the AdaConv around it comes trained."""
        return list(self.vae.parameters())

    def descriptors(self, styles: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """Flattened W (N, S*k*k) of style images (N, 1, H, W), in batches, without gradients."""
        with torch.no_grad():
            return torch.cat([self.style_descriptor(styles[i:i + batch]).flatten(1).float()
                              for i in range(0, styles.shape[0], batch)])

    def calibrate(self, styles: torch.Tensor) -> None:
        """Standardise the VAE's inputs on the W of training style images (B, 1, H, W), once, as RAIN does."""
        self.vae.calibrate(self.descriptors(styles))

    def vae_losses(self, flat: torch.Tensor, *, generator=None) -> dict:
        """RAIN's eq. (5)-(6) on flattened descriptors (B, S*k*k): KL of the latent to N(0, 1) and the
        reconstruction of a latent sample, in standardised units, weighed by kl_weight and rec_weight."""
        mu, logvar = self.vae.encode(flat)
        rec = self.vae.decode_standardised(self.vae.sample(mu, logvar, generator))
        l_kl = kl_loss(mu, logvar)
        l_rec = F.mse_loss(rec.float(), self.vae.standardise(flat).float())
        return {"total": self.weights["kl"] * l_kl + self.weights["rec"] * l_rec, "kl": l_kl, "rec": l_rec}

    def losses(self, content: torch.Tensor, style: torch.Tensor, *, generator=None) -> dict:
        """The VAE's losses on the style images' W (the content is AdaConv's business, already trained)."""
        return self.vae_losses(self.descriptors(style), generator=generator)

    def style_code(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the style images' latent: (B, S) each."""
        return self.vae.encode(self.style_descriptor(style).flatten(1))

    def render(self, content_feat, z: torch.Tensor, noise=None) -> torch.Tensor:
        """Decode latent z (B, S) to W, predict kernels and restyle the content's features (relu4_1, or every
        level with skips); image in [0, 1]."""
        w = self.vae.decode(z).view(-1, *self.w_shape)
        return self.decode(content_feat, w, noise=noise).clamp(0.0, 1.0)
