"""A quick, fixed check of a model in training: teacher-forced vs free-running PSNR on the same held-out crops."""

from __future__ import annotations

import numpy as np
import torch

from lm4lv_core.degrade import degrade, target
from lm4lv_core.generate import Finished
from lm4lv_core.metrics import psnr
from lm4lv_core.tasks import get_task


def baseline_input(task: str, degraded, reference):
    """What MAE-r reconstructs for a task (`Task.mae_r_of_target`): the degraded input, or the target itself."""
    return reference if get_task(task).mae_r_of_target else degraded


class FreeRunningProbe:
    """`count` fixed 64 px crops of the scikit-image photo `motorcycle_right` (not a training or test image)."""

    def __init__(self, model, tasks: list[str], count: int = 8, seed: int = 1234):
        from skimage import data

        photo = data.stereo_motorcycle()[1]  # (H, W, 3) uint8, the right view
        rng = np.random.default_rng(seed)
        size = model.image_size
        self.model, self.tasks = model, [tasks[i % len(tasks)] for i in range(count)]
        self.inputs, self.targets, self.baselines = [], [], []
        for task in self.tasks:
            side = int(rng.integers(size, min(photo.shape[:2]) // 2))
            y, x = (int(rng.integers(0, photo.shape[i] - side)) for i in (0, 1))
            from PIL import Image

            clean = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.Resampling.BICUBIC)
            degraded, reference = degrade(clean, task, seed=int(rng.integers(2**31))), target(clean, task)
            self.inputs.append(degraded)
            self.targets.append(reference)
            self.baselines.append(baseline_input(task, degraded, reference))

    @torch.no_grad()
    def run(self) -> dict[str, float]:
        model, vision = self.model, self.model.vision
        was_training = model.trainable.training
        model.trainable.eval()
        lq = vision.encode(vision.preprocess(self.inputs))
        hq = vision.encode(vision.preprocess(self.targets))
        teacher = model.forward_loss(lq, hq, self.tasks)
        free = {e.row: e for e in model.events(lq, self.tasks, force_image_after=4) if isinstance(e, Finished)}
        free_tokens = torch.stack([free[i].image_or(lq[i]) for i in range(len(self.tasks))])
        refs = [np.asarray(t) for t in self.targets]

        def mean_psnr(tokens):
            return float(
                np.mean([psnr(np.asarray(im), r) for im, r in zip(vision.postprocess(vision.decode(tokens)), refs)])
            )

        base = vision.encode(vision.preprocess(self.baselines))
        model.trainable.train(was_training)
        # feature MSEs in raw MAE space (the training loss may be standardised), comparable across recipes
        return {
            "teacher_l2": float(((teacher["pred"] - hq) ** 2).mean()),
            "teacher_psnr": mean_psnr(teacher["pred"]),
            "free_l2": float(((free_tokens - hq) ** 2).mean()),
            "free_psnr": mean_psnr(free_tokens),
            "mae_r_psnr": mean_psnr(base),
            "copy_l2": float(((lq - hq) ** 2).mean()),
        }
