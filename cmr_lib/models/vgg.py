"""VGG-19 encoder up to relu4_1 (frozen), the feature extractor of every stylizer (paper Sec. 4.2).

Layer indices and parameter names follow torchvision's `vgg19().features`, so torchvision's published
ImageNet state dict loads as is (`features.0.weight`, ..., `features.19.bias`). Grey slices enter as
three identical channels with ImageNet normalisation. A width multiplier (< 1) gives the narrower
encoders the CPU profiles may use with offline weights; `paper` keeps width 1 (VGG-19 itself).

Weights (`encoder_weights`): a path to a .pth file; 'imagenet' (torch's hub cache, downloaded only
when the machine is online); 'random' (seeded He-initialised filters, as in random-feature texture
synthesis); or 'auto' (imagenet when available, else the offline fallback chosen in docs/methods.md).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from cmr_lib.core import digests
from cmr_lib.core.errors import CmrError
from cmr_lib.core.paths import check_file

# torchvision vgg19().features[0:21]: (index, kind, in, out); pools and ReLUs keep their indices
_CFG = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
        (16, 256, 256), (19, 256, 512)]
_POOLS = (4, 9, 18)
TAPS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20}
TAP_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512}
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least 8)."""
    return channels if width == 1.0 else max(8, int(round(channels * width)))


class VGGEncoder(nn.Module):
    """Frozen VGG-19 convolutions to relu4_1; forward returns [relu1_1, relu2_1, relu3_1, relu4_1]."""

    def __init__(self, *, width: float = 1.0):
        super().__init__()
        self.width = float(width)
        layers: list[nn.Module] = []
        convs = {i: (cin, cout) for i, cin, cout in _CFG}
        for i in range(TAPS["relu4_1"] + 1):
            if i in convs:
                cin, cout = convs[i]
                layers.append(nn.Conv2d(3 if i == 0 else scaled(cin, width), scaled(cout, width), 3, padding=1))
            elif i in _POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.out_channels = {k: scaled(c, width) for k, c in TAP_CHANNELS.items()}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)          # frozen: always in eval mode

    def forward(self, x: torch.Tensor, *, last_only: bool = False):
        """x: (B, 1, H, W) grey in [0, 1] -> features at relu1_1..relu4_1 (or only relu4_1)."""
        x = (x.expand(-1, 3, -1, -1) - self.mean) / self.std     # (B, 3, H, W), ImageNet-normalised
        feats = []
        stops = set(TAPS.values())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in stops and (not last_only or i == TAPS["relu4_1"]):
                feats.append(x)                                       # (B, C_i, H/2^k, W/2^k)
        return feats[-1] if last_only else feats


def random_init(encoder: VGGEncoder, seed: int) -> VGGEncoder:
    """Seeded He-normal filters and zero biases: the random-feature encoder (Ustyuzhaninov et al. 2016)."""
    g = torch.Generator().manual_seed(int(seed))
    for m in encoder.features:
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return encoder


def _features_state(state: dict, source: str) -> dict:
    """Pick `features.N.{weight,bias}` (N <= 19) out of a torchvision-format (or bare) state dict."""
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CmrError(f"{source}: not a state dict (a mapping of parameter names to tensors)")
    out = {}
    for key, value in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        k = k if k.startswith("features.") else f"features.{k}" if k.split(".")[0].isdigit() else k
        parts = k.split(".")
        if parts[0] == "features" and len(parts) == 3 and int(parts[1]) <= TAPS["relu4_1"]:
            out[k] = value
    return out


def load_state(encoder: VGGEncoder, state: dict, source: str) -> VGGEncoder:
    """Load VGG weights from a torchvision-format state dict; a wrong or partial one is a clear error."""
    feats = _features_state(state, source)
    own = encoder.state_dict()
    missing = [k for k in own if k not in feats]
    if missing:
        raise CmrError(f"{source}: not a VGG-19 state dict: missing '{missing[0]}' "
                       f"({len(missing)} of {len(own)} encoder parameters missing)")
    for k, v in own.items():
        if not isinstance(feats[k], torch.Tensor) or tuple(feats[k].shape) != tuple(v.shape):
            shape = tuple(feats[k].shape) if isinstance(feats[k], torch.Tensor) else type(feats[k]).__name__
            raise CmrError(f"{source}: '{k}' has shape {shape}, the encoder (width {encoder.width:g}) needs "
                           f"{tuple(v.shape)}")
    encoder.load_state_dict({k: feats[k].float() for k in own})
    return encoder


def imagenet_cache_path() -> Path:
    """Where torch's hub cache keeps torchvision's VGG-19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_URL.rsplit("/", 1)[-1]


def _online(host="download.pytorch.org", timeout=3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def imagenet_available(*, allow_download: bool) -> bool:
    """True when the ImageNet weights are cached, or (if allowed) could be downloaded now."""
    return imagenet_cache_path().is_file() or (allow_download and _online())


def file_digest(path) -> str:
    """First 16 hex digits of a file's SHA-256 (recorded with the weights used)."""
    return digests.file_digest(path)[:16]


def load_weights_file(encoder: VGGEncoder, path) -> VGGEncoder:
    """Load a .pth file safely (weights_only=True: no code runs on load)."""
    path = check_file(Path(path).expanduser(), "encoder weights file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated files, pickles with code, non-torch files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CmrError(f"{path}: cannot be loaded as weights ({first[:200]})") from None
    return load_state(encoder, state, str(path))


def build_encoder(weights: str, *, width: float = 1.0, seed: int = 0, fallback: str = "random"):
    """An encoder and a record of the weights it got: (encoder, {'weights': ..., 'source': ...}).

    weights: 'imagenet', 'random', 'auto' (imagenet if cached or downloadable, else `fallback`), or a
    .pth path. 'mr' (an encoder trained on the MR slices) is resolved by cmr_lib.training.stylizers into a path.
    """
    encoder = VGGEncoder(width=width)
    if weights == "auto":
        if width == 1.0 and imagenet_available(allow_download=os.environ.get("CMR_OFFLINE") != "1"):
            weights = "imagenet"
        else:
            weights = fallback
            if weights not in ("random",):
                raise CmrError(f"parameter 'encoder_weights' = 'auto': offline fallback {fallback!r} must be "
                               "resolved to a file first (cmr_lib.training.stylizers.resolve_encoder)")
    if weights == "imagenet":
        if width != 1.0:
            raise CmrError(f"parameter 'encoder_weights' = 'imagenet' needs encoder width 1, not {width:g}")
        path = imagenet_cache_path()
        if not path.is_file():
            try:
                torch.hub.load_state_dict_from_url(IMAGENET_URL, progress=False, weights_only=True)
            except Exception as exc:
                raise CmrError(f"ImageNet VGG-19 weights are not in {path} and cannot be downloaded "
                               f"({type(exc).__name__}); use encoder_weights='auto' or a .pth path") from None
        load_weights_file(encoder, path)
        return encoder, {"weights": "imagenet", "source": str(path), "sha256": file_digest(path), "width": 1.0}
    if weights == "random":
        random_init(encoder, seed)
        return encoder, {"weights": "random", "source": f"He-normal, seed {seed}", "width": width}
    if isinstance(weights, (str, os.PathLike)) and str(weights).endswith((".pth", ".pt")):
        load_weights_file(encoder, weights)
        return encoder, {"weights": "file", "source": str(weights), "sha256": file_digest(weights), "width": width}
    raise CmrError(f"parameter 'encoder_weights' = {weights!r}: choose 'auto', 'imagenet', 'random', 'mr' "
                   "or a path to a .pth file")
