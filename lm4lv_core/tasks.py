"""What a task is, in one place: its help line, degradation and strengths, target, and what MAE-r reconstructs.

| task     | input made from the clean image                       | random strength (paper)      | fixed (evaluation)   |
| denoise  | + Gaussian noise                                      | sigma ~ U[0, 50/255]         | sigma = 25/255       |
| deblur   | Gaussian blur, k x k kernel, sigma = OpenCV's default | k ~ {1, 3, 5, 7}             | k = 5                |
| derain   | synthetic rain streaks (`corruptions.add_rain`)       | amount ~ U[0, 20]            | amount = 10          |
| depepper | a fraction of pixels set to black                     | fraction ~ U[0, 0.1]         | fraction = 0.05      |
| demask   | 4x4-pixel blocks set to black                         | rate 0.1                     | rate 0.1             |
| rotate   | none (the target is rotated 90 degrees counter-clockwise)                                     |
| flip     | none (the target is flipped horizontally)                                                     |
| repeat   | none (the paper's sanity check: the target is the input)                                      |

Adding a task is one `Task` in `REGISTRY` (plus its test): `degrade`, tiling, training, evaluation, the probes, the
CLI and the app read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .corruptions import add_noise, add_pepper, add_rain, gaussian_blur, mask_blocks
from .errors import InputError

Box = tuple[int, int, int, int]  # (left, top, right, bottom), pixels


@dataclass(frozen=True)
class Task:
    """One task. `corrupt(x, strength, rng)`: the degradation of an (H, W, 3) float image in [0, 1] (None: the input
    is the clean image); `transpose`: the target is the clean image transposed so (None: the clean image itself)."""

    name: str
    help: str  # one line, for the app and the CLI
    corrupt: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray] | None = None
    random_strength: Callable[[np.random.Generator], Any] | None = None  # the paper's training distribution
    fixed_strength: Any = None  # evaluation's strength
    level_strength: Callable[[float], Any] | None = None  # the app's 0..1 dial (0: none, 1: the paper's maximum)
    transpose: Image.Transpose | None = None
    sanity: bool = False  # a check of the model (repeat), not a task offered to users

    @property
    def spatial(self) -> bool:
        """The output is the input moved around (rotate, flip): tiles land elsewhere, no degradation."""
        return self.transpose is not None

    @property
    def mae_r_of_target(self) -> bool:
        """What the MAE-r baseline reconstructs: the target itself where the input is undegraded (spatial tasks,
        repeat), else the degraded input."""
        return self.corrupt is None

    def strength(self, rng: np.random.Generator, strength=None):
        """The strength to apply: `None` draws the paper's random one from `rng`, "fixed" is evaluation's."""
        if strength == "fixed":
            return self.fixed_strength
        if strength is None:
            return self.random_strength(rng) if self.random_strength else None
        return strength

    def transform(self, image: Image.Image) -> Image.Image:
        """The clean image -> this task's target geometry (identity unless spatial)."""
        return image.transpose(self.transpose) if self.transpose is not None else image

    def source_patches(self, grid: int) -> np.ndarray:
        """(grid * grid,) for each patch of the target (raster order) the input patch it comes from, on a square grid
        of patches (the identity unless spatial)."""
        index = Image.fromarray(np.arange(grid * grid, dtype=np.int32).reshape(grid, grid), mode="I")
        return np.asarray(self.transform(index)).reshape(-1).astype(np.int64)

    def token_sources(self, count: int) -> np.ndarray:
        """(count,) for each visual token of the answer (the CLS token, then the patches in raster order) the LQ
        token it comes from."""
        grid = int(round((count - 1) ** 0.5))
        return np.concatenate([[0], 1 + self.source_patches(grid)]).astype(np.int64)

    def box(self, box: Box, width: int, height: int) -> Box:
        """Where a box of a width x height image lands after `transform` (a tile's place in the output)."""
        if self.transpose is None:
            return box
        corners = [_moved(self.transpose, x, y, width, height) for x in box[0::2] for y in box[1::2]]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return min(xs), min(ys), max(xs), max(ys)


def _moved(transpose: Image.Transpose, x: int, y: int, width: int, height: int) -> tuple[int, int]:
    """A point (on the pixel grid's corners) of a width x height image after PIL's `transpose`."""
    T = Image.Transpose
    return {
        T.FLIP_LEFT_RIGHT: (width - x, y),
        T.FLIP_TOP_BOTTOM: (x, height - y),
        T.ROTATE_90: (y, width - x),
        T.ROTATE_180: (width - x, height - y),
        T.ROTATE_270: (height - y, x),
        T.TRANSPOSE: (y, x),
        T.TRANSVERSE: (height - y, width - x),
    }[transpose]


REGISTRY: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "denoise",
            "remove Gaussian noise",
            add_noise,
            lambda rng: float(rng.uniform(0, 50 / 255)),
            25 / 255,
            lambda level: level * 50 / 255,
        ),
        Task(
            "deblur",
            "remove Gaussian blur",
            gaussian_blur,
            lambda rng: int(rng.choice([1, 3, 5, 7])),
            5,
            lambda level: (1, 3, 5, 7)[int(round(level * 3))],
        ),
        Task(
            "derain",
            "remove rain streaks",
            add_rain,
            lambda rng: float(rng.uniform(0, 20)),
            10.0,
            lambda level: level * 20.0,
        ),
        Task(
            "depepper",
            "remove pepper (black-pixel) noise",
            add_pepper,
            lambda rng: float(rng.uniform(0, 0.1)),
            0.05,
            lambda level: level * 0.1,
        ),
        Task(
            "demask", "fill in 4x4 masked blocks", mask_blocks, lambda rng: 0.1, 0.1, lambda level: level * 0.2
        ),  # the paper's fixed rate 0.1 sits at level 0.5
        Task("rotate", "rotate by 90 degrees counter-clockwise", transpose=Image.Transpose.ROTATE_90),
        Task("flip", "flip horizontally", transpose=Image.Transpose.FLIP_LEFT_RIGHT),
        Task("repeat", "repeat the image (the paper's sanity check)", sanity=True),
    )
}

TASKS = tuple(name for name, t in REGISTRY.items() if not t.sanity)  # the paper's seven, in Table 2's order
SANITY_TASKS = tuple(name for name, t in REGISTRY.items() if t.sanity)


def get_task(name: str) -> Task:
    """The registered task of that name; an unknown name is an InputError naming the choices."""
    if name not in REGISTRY:
        offered = [n for n, t in REGISTRY.items() if not t.sanity]
        raise InputError(f"Unknown task {name!r}; choose one of: {', '.join(offered)}.")
    return REGISTRY[name]


def restoration_tasks(names) -> list[str]:
    """The names among `names` whose input is degraded (Table 2's mean Delta is over these)."""
    return [n for n in names if not get_task(n).spatial]
