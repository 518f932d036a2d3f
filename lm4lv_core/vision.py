"""The vision module: a HF `transformers` ViTMAE used as an autoencoder (encode all patches, decode all tokens).

Encoding uses no masking and keeps the patches in raster order: HF shuffles patches by `argsort(noise)` even at
mask ratio 0, so `encode` passes `noise = arange(L)`. The CLS token is kept: `num_tokens = L + 1`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from .errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_VISION = "facebook/vit-mae-large"
ALIASES = {"paper": PAPER_VISION}  # the paper's vision module (224 px, patch 16: 197 tokens)


@dataclass
class VisionConfig:
    """Size of a ViT-MAE built from scratch. The default is the `tiny` preset we train on a CPU."""

    image_size: int = 64
    patch_size: int = 8
    hidden_size: int = 192
    num_hidden_layers: int = 6
    num_attention_heads: int = 3
    intermediate_size: int = 768
    decoder_hidden_size: int = 256
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 8
    decoder_intermediate_size: int = 1024
    mask_ratio: float = 0.75  # used by pretraining only; encoding for LM4LV never masks

    def to_hf(self) -> ViTMAEConfig:
        return ViTMAEConfig(**asdict(self), norm_pix_loss=False)


PRESETS = {
    "tiny": VisionConfig(),
    "debug": VisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    ),
}


class VisionModule(nn.Module):
    """Wraps `ViTMAEForPreTraining`: pixels <-> visual tokens, pre/post-processing and the MAE-r baseline."""

    def __init__(self, mae: ViTMAEForPreTraining):
        super().__init__()
        self.mae = mae
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, config: VisionConfig | str = "tiny", seed: int | None = None) -> VisionModule:
        """A randomly initialised module (for pretraining and tests); `config` is a VisionConfig or a preset name."""
        if isinstance(config, str):
            config = PRESETS[config]
        if seed is not None:
            torch.manual_seed(seed)
        return cls(ViTMAEForPreTraining(config.to_hf()))

    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike) -> VisionModule:
        """Load a ViT-MAE from a local directory or a hub id (safetensors only); "paper" = facebook/vit-mae-large."""
        path = ALIASES.get(str(path_or_id), str(path_or_id))
        local = os.path.isdir(path)
        if local and not os.path.isfile(os.path.join(path, "config.json")):
            raise CheckpointError(f"The vision checkpoint directory {path} has no config.json.")
        try:
            mae = ViTMAEForPreTraining.from_pretrained(path, use_safetensors=True)
        except OSError as exc:
            where = "directory" if local else "hub id or directory"
            raise CheckpointError(f"Could not load the vision module from {where} {path!r}: {exc}") from exc
        except Exception as exc:  # corrupt safetensors, mismatched shapes
            raise CheckpointError(f"The vision checkpoint at {path!r} is corrupt or incompatible: {exc}") from exc
        with torch.no_grad():  # own the weights: safetensors maps the file, so rewriting it would change this model
            for tensor in [*mae.parameters(), *mae.buffers()]:
                tensor.data = tensor.data.clone()
        return cls(mae)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config + safetensors; each file is replaced atomically, so a reader never sees a half-written one."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".saving-", dir=path)
        try:
            self.mae.save_pretrained(staging, safe_serialization=True)
            for name in os.listdir(staging):
                os.replace(os.path.join(staging, name), os.path.join(path, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ----------------------------------------------------------------------------------------- sizes
    @property
    def config(self) -> ViTMAEConfig:
        return self.mae.config

    @property
    def image_size(self) -> int:
        size = self.config.image_size
        return size if isinstance(size, int) else size[0]

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Visual tokens per image: the patches plus the CLS token."""
        return self.grid**2 + 1

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def fingerprint(self) -> str:
        """A short hash of the encoder weights (they define the feature space the adapters were trained on)."""
        return weights_fingerprint(self.mae.vit)

    # ----------------------------------------------------------------------------------------- tensors
    @contextlib.contextmanager
    def masking(self, ratio: float):
        """Temporarily set the MAE mask ratio (pretraining); outside this context it is 0."""
        previous = self.config.mask_ratio
        self.config.mask_ratio = ratio
        try:
            yield
        finally:
            self.config.mask_ratio = previous

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised pixels -> (B, L+1, D) encoder features, CLS first, patches in raster order."""
        batch, num_patches = pixels.shape[0], self.grid**2
        noise = torch.arange(num_patches, device=pixels.device, dtype=torch.float32).expand(batch, num_patches)
        with self.masking(0.0):
            out = self.mae.vit(pixel_values=pixels, noise=noise)
        return out.last_hidden_state  # (B, L+1, D)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L+1, D) visual tokens -> (B, 3, H, W) normalised pixels."""
        batch, count, _ = tokens.shape
        if count != self.num_tokens:
            raise ValueError(f"decode expects {self.num_tokens} tokens per image, got {count}")
        ids_restore = torch.arange(count - 1, device=tokens.device).expand(batch, count - 1)
        logits = self.mae.decoder(tokens, ids_restore).logits  # (B, L, p*p*3)
        return self.mae.unpatchify(logits)

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> normalised pixels."""
        return (images01 - self.mean) / self.std

    def denormalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels -> (B, 3, H, W) clamped to [0, 1]."""
        return (pixels * self.std + self.mean).clamp(0, 1)

    # ----------------------------------------------------------------------------------------- images
    def preprocess(self, images) -> torch.Tensor:
        """Images -> (B, 3, S, S) normalised pixels on the module's device. `images`: RGB PIL images (one or a list),
        a uint8 batch (B, H, W, 3) as numpy array or tensor, or a float tensor (B, 3, H, W) in [0, 1] (the tensor
        entry of training: no PIL round trip). Other sizes are resized to the model's (bicubic)."""
        batch = self._batch01(images)  # (B, 3, H, W) float32 in [0, 1]
        s = self.image_size
        if batch.shape[-2:] != (s, s):
            batch = F.interpolate(batch, size=(s, s), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        return self.normalize(batch.to(self.mean.device))

    def _batch01(self, images) -> torch.Tensor:
        """Any accepted image batch (see `preprocess`) -> (B, 3, H, W) float32 in [0, 1] (PIL images are resized
        with PIL's bicubic, as before)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if torch.is_tensor(images):
            if images.dtype == torch.uint8:  # (B, H, W, 3)
                return images.permute(0, 3, 1, 2).float() / 255.0
            return images.float()
        images = [images] if isinstance(images, Image.Image) else images
        s = self.image_size
        arrays = [
            np.asarray(
                (im if im.size == (s, s) else im.resize((s, s), Image.Resampling.BICUBIC)).convert("RGB"),
                dtype=np.float32,
            )
            / 255.0
            for im in images
        ]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, S, S)

    def postprocess(self, pixels: torch.Tensor) -> list[Image.Image]:
        """(B, 3, S, S) normalised pixels -> RGB PIL images."""
        arrays = (self.denormalize(pixels.float()) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arrays]

    @torch.inference_mode()
    def reconstruct(self, images: list[Image.Image] | Image.Image):
        """MAE-r: encode and decode the (degraded) input. Returns a PIL image, or a list for a list."""
        single = isinstance(images, Image.Image)
        out = self.postprocess(self.decode(self.encode(self.preprocess(images))))
        return out[0] if single else out


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 (16 hex digits) over every tensor's name, shape and a strided sample of its values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        # through bf16, so that the same weights held in fp32 or bf16 give the same fingerprint
        sample = flat[::step][:4096].to(torch.bfloat16).float().cpu().numpy()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]
