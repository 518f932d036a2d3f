"""A checkpoint whose TASK adapter_in writes only outside the span of the position table (no training; the shared
table unchanged), to be judged by the routing probe.

    PYTHONPATH=. python research/levers/detail/carry/orthogonal_positions.py research/checkpoints/candidates/repeat-3z \
        runs/orth_repeat repeat
    python -m train.routing --checkpoint runs/orth_repeat --task repeat --images skimage --value-layers 18
"""
import os
import sys

import torch

from lm4lv_core.variants import load_model

source, out, task = sys.argv[1:4]
model = load_model(source)
with torch.no_grad():
    positions = model.heads.visual_positions.double()  # (N, llm_dim)
    _, singular, rows = torch.linalg.svd(positions, full_matrices=False)
    basis = rows[singular > singular.max() * 1e-6].T  # (llm_dim, r): the positions' span
    outside = torch.eye(positions.shape[1], dtype=torch.float64) - basis @ basis.T  # projector onto its complement
    adapter = model.heads.input_adapter(task)
    adapter.weight.copy_((outside @ adapter.weight.double()).float())
    adapter.bias.copy_((outside @ adapter.bias.double()).float())
print(f"positions span {basis.shape[1]} directions; adapter_in of {task} projected out of them")
model.save_pretrained(out, vision_path=os.path.relpath(os.path.abspath("checkpoints/mae-tiny"), out))
