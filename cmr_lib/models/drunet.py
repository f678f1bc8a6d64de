"""DRU-Net (Jafari et al., ISBI 2020): a U-Net with dense-residual blocks, the segmentation network.

Reference: the authors' TensorFlow code (MinaJf/DRU-net). Down blocks add two conv+BN outputs to the
block input (x + x1 + x_in), apply ReLU and concatenate the block input, so channels double per level
by concatenation. Up blocks upsample with a transposed convolution, concatenate the skip, and sum two
conv+BN outputs with a 1x1 shortcut. At depth 5 and 16 root channels it has ~3.1 M parameters for one
input channel and 4 classes (printed by notebook 04). Loss: cross-entropy + soft Dice (weights are
parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout)


class DownBlock(nn.Module):
    """(B, C, H, W) -> (B, 2C, H, W): relu(x + x1 + x_in) concatenated with x_in."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c, c)
        self.conv2, self.bn2 = _conv_bn(c, c)

    def forward(self, x_in):
        x1 = self.bn1(self.conv1(x_in))                        # (B, C, H, W), kept before its ReLU
        x = self.bn2(self.conv2(F.relu(x1)))
        return torch.cat([F.relu(x + x1 + x_in), x_in], 1)     # (B, 2C, H, W)


class UpBlock(nn.Module):
    """(B, C_in, H/2, W/2) + skip (B, 2F, H, W) -> (B, F, H, W)."""

    def __init__(self, cin: int, skip: int, f: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, f, 3, stride=2, padding=1, output_padding=1)
        self.bn_up = nn.BatchNorm2d(f)
        self.conv1, self.bn1 = _conv_bn(skip + f, f)
        self.conv2, self.bn2 = _conv_bn(f, f)
        self.short, self.bn3 = _conv_bn(skip + f, f, k=1)

    def forward(self, x, skip):
        u = F.relu(self.bn_up(self.up(x)))                     # (B, F, H, W)
        r = torch.cat([skip, u], 1)                            # (B, 2F + F, H, W)
        x1 = self.bn1(self.conv1(r))
        x = self.bn2(self.conv2(F.relu(x1)))
        return F.relu(x + x1 + self.bn3(self.short(r)))        # (B, F, H, W)


class DRUNet(nn.Module):
    """Input (B, in_channels, H, W) with H, W divisible by 2^(depth-1) -> logits (B, classes, H, W)."""

    def __init__(self, *, in_channels: int = 1, classes: int = 4, depth: int = 5, root: int = 16,
                 head_relu: bool = True):
        super().__init__()
        if depth < 2 or root < 1:
            raise ValueError(f"DRU-Net needs depth >= 2 and root >= 1 (got depth {depth}, root {root})")
        self.depth = depth
        self.stem = nn.Conv2d(in_channels, root, 7, padding=3)                      # no BN/ReLU (reference)
        self.down = nn.ModuleList([DownBlock(root * 2 ** l) for l in range(depth)])  # C -> 2C per level
        self.up = nn.ModuleList([
            UpBlock(root * 2 ** depth if l == depth - 2 else root * 2 ** (l + 1), 2 * root * 2 ** l, root * 2 ** l)
            for l in range(depth - 2, -1, -1)])
        self.head = nn.Conv2d(root, classes, 1, bias=False)
        self.head_relu = head_relu                                                  # the reference has it

    def forward(self, x):
        x = self.stem(x)                                       # (B, root, H, W)
        skips = []
        for l, block in enumerate(self.down):
            x = block(x)                                       # (B, 2 root 2^l, H/2^l, W/2^l)
            if l < self.depth - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for block in self.up:
            x = block(x, skips.pop())                          # (B, root 2^l, H/2^l, W/2^l)
        logits = self.head(x)                                  # (B, classes, H, W)
        return F.relu(logits) if self.head_relu else logits


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layer_table(model: DRUNet, size: int = 96) -> list[dict]:
    """One row per block (stem, down_l, up_l, head): output shape for a (1, 1, size, size) input and parameters."""
    rows, hooks = [], []
    blocks = [("stem", model.stem), *[(f"down{l}", b) for l, b in enumerate(model.down)],
              *[(f"up{model.depth - 2 - l}", b) for l, b in enumerate(model.up)], ("head", model.head)]
    for name, block in blocks:
        def hook(_m, _inp, out, name=name, block=block):
            rows.append({"block": name, "output": tuple(out.shape[1:]), "parameters": parameter_count(block)})
        hooks.append(block.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, model.stem.in_channels, size, size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, background: bool = False,
                   eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over classes (foreground only by default) and images: 2 sum(p y) / sum(p + y)."""
    probs = logits.float().softmax(1)                                       # (B, K, H, W)
    onehot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    if not background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    inter = (probs * onehot).sum((2, 3))
    denom = (probs + onehot).sum((2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, *, ce_weight: float = 1.0,
                      dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + soft Dice, the DRU-Net training loss (weights are parameters)."""
    return ce_weight * F.cross_entropy(logits.float(), target) + dice_weight * soft_dice_loss(logits, target)
