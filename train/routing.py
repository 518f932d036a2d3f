"""Routing probe: how much of each image token the frozen LLM carries to where the restored token is written.

    python -m train.routing --checkpoint checkpoints/lm4lv-smollm2 --task denoise --images skimage --json OUT

Teacher-forced (`--inputs free`: the model's own generated tokens fed back, i.e. free running's hidden states), ridge
readouts (ridge chosen on held-out crops) fitted on training crops and scored on the evaluation photos (PSNR of the
image the readouts' patches assemble):
- `writing[l]`: from the hidden state after layer l (0: the input embeddings) at each position that predicts an HQ
  token, to that token's pixels in the reference image; `adapter_out` is the model's own output on those inputs;
- `value[l]`: from the attention value vectors of layer l at each LQ position, to that LQ token's own pixels (what the
  value path can pass on), beside `lq_embedding` (from the input embedding itself) and `lq_tokens` (the MAE decoder
  on the LQ tokens: the ceiling of both);
- `lq_stream[l]`: from the hidden state after layer l at each LQ position, to that LQ token's own pixels (how much of
  the token its own position still holds where a copying layer reads it);
- `attention` (evaluation photos, eager attention): the heads that copy (mass from each writing position on the LQ
  token it restores, for rotate and flip the one it comes from, and how often that token is the head's top LQ
  choice), and per layer the mass that LQ positions put on the other LQ tokens (how much of other tokens' content attention brings to a token's position);
- `loudness`: the mean norm of the input embeddings per role (LQ image, task tokens, answer's image, text);
- `copy` (the degraded input) and `mae_r` against the reference, as in Table 2.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from lm4lv_core.degrade import degrade, target
from lm4lv_core.images import fit_square
from lm4lv_core.metrics import psnr
from lm4lv_core.sequence import HQ, LQ, TASK, TEXT
from lm4lv_core.tasks import get_task
from train.data import RandomCrops, degradation_seed, load_eval_images
from train.engine import load_autoregressive
from train.objectives import fed_tokens
from train.probe import baseline_input

FIT_BATCH = 3 * 10**9  # crop indices far from training and from the readout refit


def patches(vision, images01: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [0, 1] -> (B, L, p*p*3) normalised pixels, one row per patch token."""
    return vision.mae.patchify(vision.normalize(images01))


def image_psnr(vision, predicted: torch.Tensor, reference01: torch.Tensor) -> float:
    """Mean PSNR of images assembled from predicted patches (B, L, p*p*3) against references (B, 3, S, S)."""
    return mean_psnr(vision.postprocess(vision.mae.unpatchify(predicted.float())), reference01)


def decoded_psnr(vision, tokens: torch.Tensor, reference01: torch.Tensor) -> float:
    """Mean PSNR of the MAE decoder's images of tokens (B, N, D) against references (B, 3, S, S)."""
    return mean_psnr(vision.postprocess(vision.decode(tokens)), reference01)


def mean_psnr(images: list, reference01: torch.Tensor) -> float:
    refs = (reference01 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return float(np.mean([psnr(np.asarray(a), r) for a, r in zip(images, refs)]))


def concat(parts: list):
    """Concatenate along the batch a list of equally nested dicts / lists of tensors."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [concat([p[i] for p in parts]) for i in range(len(first))]
    return torch.cat(parts)


def sequence_embeds(
    model, lq01: torch.Tensor, hq01: torch.Tensor, tasks: list[str], inputs: str = "teacher"
) -> torch.Tensor:
    """(B, 3, S, S) degraded and reference images in [0, 1] -> (B, T, llm_dim) the training sequence's embeddings,
    its HQ slots filled with the reference's tokens ("teacher") or the model's generated ones ("free")."""
    vision = model.vision
    lq, hq = vision.encode(vision.normalize(lq01)), vision.encode(vision.normalize(hq01))
    return model.embed_layout(model.training_layout, lq, tasks, fed_tokens(model, lq, hq, tasks, inputs))


@torch.no_grad()
def traces(model, embeds: torch.Tensor, tasks: list[str], value_layers: list[int]) -> dict:
    """Features of a training-layout sequence (B, T, llm_dim) embeddings (`sequence_embeds`) of B `tasks`: per layer
    the hidden states at the writing positions (B, L, llm_dim), the value vectors at LQ positions (B, L, kv_dim) for
    `value_layers`, the LQ input embeddings and adapter_out's output."""
    layout = model.training_layout
    values, hooks = {}, []
    for layer in value_layers:
        projection = model.llm.base_model.layers[layer].self_attn.v_proj
        hooks.append(projection.register_forward_hook(lambda m, i, out, k=layer: values.__setitem__(k, out)))
    try:
        out = model.llm.base_model(inputs_embeds=embeds.to(model.llm_dtype), output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    writers = layout.regression_sources()[1:]  # positions predicting the patch tokens (not the CLS token)
    readers = layout.positions(LQ)[1:]  # the LQ patch tokens
    return {
        "writing": [h[:, writers].float() for h in out.hidden_states],
        "lq_stream": [h[:, readers].float() for h in out.hidden_states],
        "value": {k: v[:, readers].float() for k, v in values.items()},
        "lq_embedding": embeds[:, readers].float(),
        "adapter_out": model.llm_to_visual(out.last_hidden_state.float()[:, layout.regression_sources()], tasks),
    }


def loudness(layout, embeds: torch.Tensor) -> dict[str, float]:
    """Mean norm of the (B, T, llm_dim) input embeddings per role: how loud the LQ image is beside the rest."""
    norms = embeds.float().norm(dim=-1).mean(0)  # (T,)
    roles = (("lq", LQ), ("task", TASK), ("answer", HQ), ("text", TEXT))
    return {name: float(norms[layout.positions(kind)].mean()) for name, kind in roles}


@torch.no_grad()
def set_traces(
    model, lq01: torch.Tensor, hq01: torch.Tensor, task: str, value_layers: list[int], batch_size: int = 16
) -> dict:
    """`traces` of a whole teacher-forced set (B, 3, S, S) degraded and reference images, computed in batches."""
    parts = []
    for i in range(0, len(lq01), batch_size):
        tasks = [task] * len(lq01[i : i + batch_size])
        parts.append(
            traces(
                model,
                sequence_embeds(model, lq01[i : i + batch_size], hq01[i : i + batch_size], tasks),
                tasks,
                value_layers,
            )
        )
    return concat(parts)


def attention_statistics(model, embeds: torch.Tensor, top: int = 5, task: str = "denoise") -> dict:
    """Attention weights (eager attention) on a training-layout sequence (B, T, llm_dim) of `task` summarised: the
    `top` heads by mass from the writing positions on the LQ token that the restored token comes from (for rotate
    and flip another index than its own), and per layer the mass LQ positions put on the other LQ tokens."""
    layout, attentions = model.training_layout, eager_attentions(model, embeds)
    writers, readers = layout.regression_sources(), layout.positions(LQ)  # (N,), (N,): the CLS token, the patches
    source = torch.from_numpy(get_task(task).token_sources(len(readers)))  # (N,): writer i restores LQ token source[i]
    count, heads, mixing = len(readers), [], []
    for index, weights in enumerate(attentions):  # (B, H, T, T)
        to_lq = weights.float()[:, :, writers][..., readers]  # (B, H, N, N)
        matching = to_lq[:, :, torch.arange(count), source].mean((0, 2))  # (H,)
        chosen = (to_lq.argmax(-1) == source).float().mean((0, 2))  # (H,)
        heads += [
            {"layer": index, "head": h, "mass": float(matching[h]), "top_choice": float(chosen[h])}
            for h in range(weights.shape[1])
        ]
        among = weights.float()[:, :, readers][..., readers]  # (B, H, N, N): LQ positions on LQ tokens
        mixing.append(float((among.sum(-1) - among.diagonal(dim1=-2, dim2=-1)).mean()))
    return {"copy_heads": sorted(heads, key=lambda h: -h["mass"])[:top], "lq_mixing": mixing}


@torch.no_grad()
def eager_attentions(model, embeds: torch.Tensor) -> tuple:
    """The frozen LLM's attention weights on (B, T, llm_dim) embeddings, one (B, H, T, T) per layer (eager
    attention for the call, the model's kernel restored after)."""
    llm = model.llm
    kernel = llm.config._attn_implementation
    llm.set_attn_implementation("eager")
    try:
        return llm.base_model(inputs_embeds=embeds.to(model.llm_dtype), output_attentions=True).attentions
    finally:
        llm.set_attn_implementation(kernel)


RIDGES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def ridge_readout(x_fit: torch.Tensor, y_fit: torch.Tensor, ridges=RIDGES):
    """A ridge map from standardised features, its ridge chosen on a held-out quarter of the fit data (then refitted
    on all of it): returns predict(x) for (..., in) -> (..., out)."""
    x, y = x_fit.reshape(-1, x_fit.shape[-1]).double(), y_fit.reshape(-1, y_fit.shape[-1]).double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z, y_mean = (x - mean) / std, y.mean(0)
    held = torch.arange(len(z)) % 4 == 3

    def solve(rows, ridge):
        zz = z[rows]
        gram = zz.T @ zz + ridge * len(zz) * torch.eye(zz.shape[1], dtype=zz.dtype)
        return torch.linalg.solve(gram, zz.T @ (y[rows] - y_mean))

    errors = [float(((z[held] @ solve(~held, r) + y_mean - y[held]) ** 2).mean()) for r in ridges]
    weight = solve(torch.ones_like(held), ridges[int(np.argmin(errors))])
    return lambda q: (((q.double() - mean) / std) @ weight + y_mean).float()


def make_set(clean: list, task: str, seeds: list[int]):
    """PIL images of the model's size -> (degraded, reference, MAE-r input) as (B, 3, S, S) tensors in [0, 1]."""
    degraded = [degrade(c, task, seed=s) for c, s in zip(clean, seeds)]
    references = [target(c, task) for c in clean]
    baselines = [baseline_input(task, d, r) for d, r in zip(degraded, references)]
    return to_tensor(degraded), to_tensor(references), to_tensor(baselines)


def probe_images(data: str, images: str, size: int, fit_images: int = 64, seed: int = 0) -> tuple[list, list]:
    """The probe's clean PIL images at the model's size: `fit_images` corpus crops from `data` (indices far from
    training's) and the evaluation photos `images` ("skimage" or a folder), fitted to the square."""
    crops = RandomCrops(data, size, seed=seed + 2)
    fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(fit_images)]
    eval_clean = [fit_square(im, size)[0] for _, im in load_eval_images(images, None)]
    return fit_clean, eval_clean


def probe_sets(task: str, fit_clean: list, eval_clean: list) -> tuple[tuple, tuple]:
    """Clean fit / evaluation images -> their `make_set`s for `task`, degraded with the probe's fixed seeds (the
    evaluation photos' as in Table 2)."""
    return (
        make_set(fit_clean, task, [10**6 + i for i in range(len(fit_clean))]),
        make_set(eval_clean, task, [degradation_seed(0, i, task) for i in range(len(eval_clean))]),
    )


def to_tensor(images: list):
    """PIL images of one size -> (B, 3, S, S) in [0, 1]."""
    return torch.stack(
        [torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1) for im in images]
    )


def to_image(t: torch.Tensor):
    """(3, S, S) in [0, 1] -> PIL image."""
    from PIL import Image

    return Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


@torch.no_grad()
def routing_table(
    model,
    task: str,
    fit_clean: list,
    eval_clean: list,
    value_layers: list[int],
    batch_size: int = 16,
    inputs: str = "teacher",
) -> dict:
    """The probe's PSNRs (see the module docstring) for one task, `inputs` ("teacher" or "free") fed back."""
    vision = model.vision
    (fit_lq, fit_hq, _), (ev_lq, ev_hq, ev_base) = probe_sets(task, fit_clean, eval_clean)

    def embeds(lq01, hq01):  # generation (inputs "free") once per set
        return torch.cat(
            [
                sequence_embeds(
                    model,
                    lq01[i : i + batch_size],
                    hq01[i : i + batch_size],
                    [task] * len(lq01[i : i + batch_size]),
                    inputs,
                )
                for i in range(0, len(lq01), batch_size)
            ]
        )

    fit_embeds, ev_embeds = embeds(fit_lq, fit_hq), embeds(ev_lq, ev_hq)
    fit, ev = [
        concat(
            [
                traces(model, e[i : i + batch_size], [task] * len(e[i : i + batch_size]), value_layers)
                for i in range(0, len(e), batch_size)
            ]
        )
        for e in (fit_embeds, ev_embeds)
    ]
    y_hq, y_lq = patches(vision, fit_hq), patches(vision, fit_lq)

    def scored(x_fit, x_eval, y, reference):
        return image_psnr(vision, ridge_readout(x_fit, y)(x_eval), reference)

    return {
        "task": task,
        "writing": [scored(f, e, y_hq, ev_hq) for f, e in zip(fit["writing"], ev["writing"])],
        "lq_stream": [scored(f, e, y_lq, ev_lq) for f, e in zip(fit["lq_stream"], ev["lq_stream"])],
        "inputs": inputs,
        "attention": attention_statistics(model, ev_embeds, task=task),
        "adapter_out": decoded_psnr(vision, ev["adapter_out"], ev_hq),
        "value": {str(k): scored(fit["value"][k], ev["value"][k], y_lq, ev_lq) for k in value_layers},
        "lq_embedding": scored(fit["lq_embedding"], ev["lq_embedding"], y_lq, ev_lq),
        "loudness": loudness(model.training_layout, ev_embeds),
        "lq_tokens": decoded_psnr(vision, vision.encode(vision.normalize(ev_lq)), ev_lq),
        "copy": image_psnr(vision, patches(vision, ev_lq), ev_hq),
        "mae_r": decoded_psnr(vision, vision.encode(vision.normalize(ev_base)), ev_hq),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="LM4LV checkpoint (default: the shipped embedded default)")
    p.add_argument("--task", default="denoise")
    p.add_argument("--images", default="skimage", help="'skimage' or a folder of clean evaluation images")
    p.add_argument("--data", default="../shared/corpus/train", help="training images the readouts are fitted on")
    p.add_argument("--fit-images", type=int, default=64, help="training crops the readouts are fitted on")
    p.add_argument("--value-layers", default="0,last", help="layers whose value vectors are read (comma list; 'last')")
    p.add_argument(
        "--inputs",
        choices=["teacher", "free"],
        default="teacher",
        help="HQ tokens fed back: the reference's (teacher forcing) or the model's own generated ones (the "
        "hidden states of free running; generation makes the probe slower)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the table here")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = load_autoregressive(args.checkpoint, args.threads, "the routing probe")
    last = model.llm.config.num_hidden_layers - 1
    layers = [last if x.strip() == "last" else int(x) for x in args.value_layers.split(",") if x.strip()]
    fit_clean, eval_clean = probe_images(args.data, args.images, model.image_size, args.fit_images, args.seed)
    table = routing_table(model, args.task, fit_clean, eval_clean, layers, inputs=args.inputs)
    table.update(
        checkpoint=args.checkpoint or "embedded default", fit_images=args.fit_images, eval_images=len(eval_clean)
    )
    writing = table["writing"]
    print(
        f"{args.task}: copy {table['copy']:.2f} dB, MAE-r {table['mae_r']:.2f} dB, {args.inputs} adapter_out "
        f"{table['adapter_out']:.2f} dB"
    )
    print(
        "writing-position readout by layer (0: embeddings; last: after the final norm): "
        + " ".join(f"{p:.1f}" for p in writing)
    )
    print(
        f"LQ tokens: MAE decoder {table['lq_tokens']:.2f} dB, input embedding {table['lq_embedding']:.2f} dB, "
        + ", ".join(f"values of layer {k} {v:.2f} dB" for k, v in table["value"].items())
    )
    print("input embedding norms by role: " + ", ".join(f"{k} {v:.2f}" for k, v in table["loudness"].items()))
    print("LQ token read from its own position, by layer: " + " ".join(f"{p:.1f}" for p in table["lq_stream"]))
    attention = table["attention"]
    print(
        "copying heads (layer.head: mass on the matching LQ token, share of top choices): "
        + ", ".join(
            f"{h['layer']}.{h['head']}: {h['mass']:.2f}, {h['top_choice']:.2f}" for h in attention["copy_heads"]
        )
    )
    print(
        "mass LQ positions put on the other LQ tokens, by layer: "
        + " ".join(f"{m:.2f}" for m in attention["lq_mixing"])
    )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
