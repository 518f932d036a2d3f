"""Latency of one demo chat turn at the model's size, end to end in process, against the decoding inside it.

    python -m bench.chat_turn [--checkpoint DIR] [--llm NAME] [--task denoise] [--repeats 5] [--threads N]

For a "Degrade it for me" turn on an example photo it times, interleaved and as medians of `--repeats` runs:
- `decode`: the generation loop alone (`model.events` on the LQ tokens: text, `<Img>`, the visual tokens);
- `turn`: `app.ui.chat_turn` consumed as the server does, each yielded image (the chat's previews included) encoded
  as the demo's components encode it (PNG into Gradio's cache), with the copy view off and on;
and splits the turn into its stages (fit and degrade, encode + MAE-r, generation with previews, the copy view's
pictures, scoring and saving) by timing the service's generator between its updates. The demo's target: a turn at
most decode + 0.5 s, and the copy view at most 10% slower. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app", "examples", "astronaut.png")


def time_decode(model, image, task: str) -> float:
    """Seconds of the generation loop alone, from LQ tokens to the last event."""
    vision = model.vision
    fitted, _ = model.fit(image, "resize")
    lq = vision.encode(vision.preprocess([fitted]))  # (1, N, vision_dim)
    began = time.perf_counter()
    for _ in model.events(lq, [task]):
        pass
    return time.perf_counter() - began


def time_turn(service, image, task: str, explain: bool) -> tuple[float, int]:
    """Seconds of one chat turn as served (yields encoded as PNG files by Gradio's Image), and the yields."""
    import gradio as gr
    from PIL import Image

    from app.ui import chat_turn

    encoder, chat = gr.Image(type="pil", format="png"), gr.Chatbot()
    message = {"files": [image], "text": f"degrade it and {task}"}
    began, yields = time.perf_counter(), 0
    for outputs in chat_turn(service, message, [], task, True, False, 0.5, 0, None, explain):
        yields += 1
        chat.postprocess(outputs[0])  # the chat's messages, their preview images encoded as the server does
        for value in outputs[2:]:
            if isinstance(value, Image.Image):
                encoder.postprocess(value)
    return time.perf_counter() - began, yields


def stages(service, image, task: str, explain: bool) -> dict[str, float]:
    """Seconds between the service's updates, by what came before each: its first update (fit, degrade), the
    first token update (encode, MAE-r, prompt), the token updates (generation and previews) and the last one."""
    marks, last = [], time.perf_counter()
    for update in service.run(image, task, synthesize=True, explain=explain):
        now = time.perf_counter()
        marks.append((update, now - last))
        last = now
    first, encode, *tokens, done = marks
    return {
        "fit_and_degrade": round(first[1], 3),
        "encode_and_mae_r": round(encode[1], 3),
        "generation_with_previews": round(sum(t for _, t in tokens), 3),
        "last_token_to_outcome": round(done[1], 3),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="LM4LV checkpoint (default: the embedded default)")
    p.add_argument("--llm", default=None, help="override the checkpoint's LLM")
    p.add_argument("--task", default="denoise")
    p.add_argument("--image", default=EXAMPLE)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from app.service import DemoService
    from lm4lv_core.variants import load_model

    service = DemoService(load_model(args.checkpoint, llm=args.llm))
    time_turn(service, args.image, args.task, True)  # warm-up: kernels, caches, Gradio's cache folder
    runs = {"decode": [], "turn": [], "turn_explained": []}
    for _ in range(args.repeats):
        runs["decode"].append(time_decode(service.model, args.image, args.task))
        runs["turn"].append(time_turn(service, args.image, args.task, False)[0])
        runs["turn_explained"].append(time_turn(service, args.image, args.task, True)[0])
    median = {name: round(statistics.median(values), 3) for name, values in runs.items()}
    summary = {
        "task": args.task,
        "visual_tokens": service.model.num_visual_tokens,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "seconds": median,
        "turn_minus_decode": round(median["turn"] - median["decode"], 3),
        "copy_view_slowdown": round(median["turn_explained"] / median["turn"] - 1, 4),
        "stages": stages(service, args.image, args.task, False),
        "stages_explained": stages(service, args.image, args.task, True),
        "all_runs": {name: [round(v, 3) for v in values] for name, values in runs.items()},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
