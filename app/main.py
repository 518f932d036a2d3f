"""`python app.py [--host H] [--port P] [--checkpoint DIR] [--share] [--mcp]`: load the model once and serve the demo."""

from __future__ import annotations

import argparse
import os
import warnings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="LM4LV web demo")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to bind")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), help="port")
    p.add_argument("--checkpoint", default=None, help="LM4LV checkpoint folder or hub id (default: embedded)")
    p.add_argument("--llm", default=None, help="override the checkpoint's LLM (hub id, folder, .gguf)")
    p.add_argument(
        "--alternative",
        action="append",
        default=None,
        metavar="DIR",
        help="another checkpoint users may select in the chat (loaded on first use; repeatable); default: "
        "the other shipped checkpoints (checkpoints/lm4lv-gemma3, the LoRA control "
        "checkpoints/lm4lv-smollm2-lora) when --checkpoint is not given",
    )
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.add_argument(
        "--mcp", action="store_true", help="also serve the API (restore, explain) as an MCP server at /gradio_api/mcp/"
    )
    p.add_argument("--concurrency", type=int, default=1, help="requests run at once (others wait in the queue)")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait in the queue")
    return p.parse_args(argv)


def alternative_loaders(folders: list[str] | None, checkpoint, llm) -> dict:
    """{label: loader} of the checkpoints users may select besides the main one (see --alternative)."""
    from lm4lv_core.checkpoint import DEFAULT_CHECKPOINT, read_raw_config, shipped_checkpoints
    from lm4lv_core.variants import load_model

    from .service import model_label

    if folders is None:
        folders = (
            [str(folder) for folder in shipped_checkpoints().values() if folder != DEFAULT_CHECKPOINT]
            if checkpoint is None
            else []
        )
    loaders = {}
    for folder in folders:
        raw = read_raw_config(folder)
        label = model_label(raw.get("lora_rank", 0) == 0, raw.get("llm", ""))
        label = label if label not in loaders else f"{label} ({os.path.basename(folder)})"
        loaders[label] = lambda folder=folder: load_model(folder, llm=llm)
    return loaders


def create_app(checkpoint=None, llm=None, concurrency: int = 1, queue_size: int = 64, alternatives=None):
    """Load the model once and build the queued Blocks app (also used by the tests)."""
    import torch

    from lm4lv_core.variants import load_model

    from .service import DemoService
    from .ui import build_demo

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        model = load_model(checkpoint, llm=llm)
    torch.set_grad_enabled(False)
    demo = build_demo(DemoService(model, alternatives=alternative_loaders(alternatives, checkpoint, llm)))
    return demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)


def main(argv=None):
    import sys

    from lm4lv_core import LM4LVError

    args = parse_args(argv)
    try:
        demo = create_app(args.checkpoint, args.llm, args.concurrency, args.queue_size, args.alternative)
    except LM4LVError as exc:  # a missing, corrupt or mismatched checkpoint: one sentence, no traceback
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, mcp_server=args.mcp)
