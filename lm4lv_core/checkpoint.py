"""Checkpoint files of every variant: where a checkpoint is (folder, hub id, the shipped default), its config
(`lm4lv_config.json`) and trained weights (`heads.safetensors`, never unpickled), and the refusals when the frozen
models it names are not the ones it was trained with."""

from __future__ import annotations

import json
import os
import sysconfig
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError
from .heads import HeadsConfig
from .lora import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE
from .vision import VisionModule, weights_fingerprint

REPO_ROOT = Path(__file__).resolve().parent.parent


def checkpoints_root() -> Path:
    """The repository's checkpoints/, or, installed with `pip install .`, PREFIX/share/lm4lv/checkpoints."""
    beside = REPO_ROOT / "checkpoints"
    return beside if beside.is_dir() else Path(sysconfig.get_path("data")) / "share" / "lm4lv" / "checkpoints"


CHECKPOINTS = checkpoints_root()
DEFAULT_CHECKPOINT = CHECKPOINTS / "lm4lv-smollm2"
DEFAULT_LORA_CHECKPOINT = CHECKPOINTS / "lm4lv-smollm2-lora"  # the lm4lv-lora control (LLM not frozen)
DEFAULT_VISION = CHECKPOINTS / "mae-tiny"
# the checkpoints this repository ships, by the name `--checkpoint` also accepts (one per frozen LLM, and the control)
SHIPPED = {
    "lm4lv-smollm2": DEFAULT_CHECKPOINT,
    "lm4lv-smollm2-lora": DEFAULT_LORA_CHECKPOINT,
    "lm4lv-gemma3": CHECKPOINTS / "lm4lv-gemma3",
}
HEADS_FILE, CONFIG_FILE = "heads.safetensors", "lm4lv_config.json"


def write_checkpoint(path: str | os.PathLike, trained: nn.Module, config: dict) -> None:
    """The trained weights (safetensors, written atomically) + the config (JSON) of any variant."""
    os.makedirs(path, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in trained.state_dict().items()}
    save_file(state, os.path.join(path, HEADS_FILE + ".tmp"))
    os.replace(os.path.join(path, HEADS_FILE + ".tmp"), os.path.join(path, HEADS_FILE))
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)


def read_trained_weights(folder: str) -> dict[str, torch.Tensor]:
    """A checkpoint's trained weights (safetensors); a missing or corrupt file is a CheckpointError."""
    try:
        return load_file(os.path.join(folder, HEADS_FILE))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"The trained weights in {folder} are missing or corrupt: {str(exc).splitlines()[0]}"
        ) from exc


def load_trained_weights(trained: nn.Module, folder: str) -> None:
    """Load a checkpoint's safetensors into `trained`; a corrupt or mismatched file is a CheckpointError."""
    try:
        trained.load_state_dict(read_trained_weights(folder))
    except RuntimeError as exc:
        raise CheckpointError(
            f"The trained weights in {folder} are corrupt or do not match its config: {str(exc).splitlines()[0]}"
        ) from exc


VISION_SUBFOLDER = "vision"  # a checkpoint that carries its vision module (one pushed to the Hub) keeps it here


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id ("owner/name"), not a local path."""
    return bool(name) and not name.startswith((".", "/", "~")) and name.count("/") == 1


def vision_candidates(recorded: str, folder: str) -> list[str]:
    """Where a checkpoint's vision module may be, in order, without repeats: the recorded location (a relative path
    is read from the checkpoint folder), the checkpoint's own `vision/` subfolder, the shipped vision module (a
    checkpoint copied away from the repository), and the recorded name as a hub id."""
    local = [
        os.path.join(folder, recorded) if recorded else None,
        os.path.join(folder, VISION_SUBFOLDER),
        default_vision(),
    ]
    found = [os.path.abspath(c) for c in local if c and os.path.isfile(os.path.join(c, "config.json"))]
    return list(dict.fromkeys(found + ([recorded] if is_hub_id(recorded) else [])))


def load_checked_vision(override, recorded: str, fingerprint: str, folder: str) -> VisionModule:
    """The vision module a checkpoint names (or `override`), refused unless its encoder is the one trained with.
    Without an override the first of `vision_candidates` whose encoder is that one is taken."""
    if override:
        vision_module = load_vision(override)
        if vision_module.fingerprint() != fingerprint:
            raise CheckpointError(
                f"The checkpoint {folder} was trained with another vision module ({recorded}), not with {override}."
            )
        return vision_module
    tried = []
    for source in vision_candidates(recorded, folder):
        try:
            vision_module = load_vision(source)
        except Exception:  # noqa: BLE001 (a candidate that does not load is simply not the one)
            tried.append(source)
            continue
        if vision_module.fingerprint() == fingerprint:
            return vision_module
        tried.append(source)
    raise CheckpointError(
        f"The vision module of checkpoint {folder} ({recorded}, fingerprint {fingerprint}) was "
        f"not found (tried {', '.join(tried) or 'nothing'}); name it with --vision."
    )


def check_llm(model, fingerprint: str, folder: str, recorded: str, override: str | None) -> None:
    """Refuse an LLM whose weights are not the ones the checkpoint was trained with."""
    if weights_fingerprint(model) != fingerprint:
        raise CheckpointError(
            f"The checkpoint {folder} was trained with another LLM ({recorded}), not with {override or recorded}."
        )


def default_vision() -> str | None:
    return str(DEFAULT_VISION) if (DEFAULT_VISION / "config.json").is_file() else None


def vision_name(vision) -> str:
    if isinstance(vision, VisionModule) or vision is None:
        return default_vision() or ""
    return str(vision)


def load_vision(source) -> VisionModule:
    if source is None:
        source = default_vision()
    if source is None:
        warnings.warn(
            "NO TRAINED VISION MODULE FOUND: using a RANDOM tiny ViT-MAE. Train one with "
            "`python -m train.pretrain_mae`.",
            stacklevel=3,
        )
        return VisionModule.from_config("tiny", seed=0)
    return VisionModule.from_pretrained(source)


def checkpoint_folder(path) -> str | None:
    """The local folder of a checkpoint given as a folder, a shipped name (`SHIPPED`) or a hub id (downloaded);
    None for the default where it is not shipped."""
    if path is None:
        return str(DEFAULT_CHECKPOINT) if (DEFAULT_CHECKPOINT / CONFIG_FILE).is_file() else None
    path = str(SHIPPED.get(str(path), path))
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
            raise CheckpointError(f"{path} is not an LM4LV checkpoint: it has no {CONFIG_FILE}.")
        return path
    if os.path.exists(path) or not is_hub_id(path):
        raise CheckpointError(f"Checkpoint directory {path} does not exist.")
    try:  # a hub id
        from huggingface_hub import snapshot_download

        return snapshot_download(
            path,
            allow_patterns=[
                HEADS_FILE,
                CONFIG_FILE,
                "README.md",
                PEFT_CONFIG_FILE,
                PEFT_WEIGHTS_FILE,
                f"{VISION_SUBFOLDER}/*",
            ],
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except Exception as exc:
        raise CheckpointError(f"Could not fetch the checkpoint {path!r} from the hub: {exc}") from exc


def shipped_checkpoints() -> dict[str, Path]:
    """{name: folder} of the shipped checkpoints present in this installation."""
    return {name: folder for name, folder in SHIPPED.items() if (folder / CONFIG_FILE).is_file()}


def read_raw_config(folder: str) -> dict:
    """A checkpoint's `lm4lv_config.json` as a dict; an unreadable one is a CheckpointError."""
    try:
        with open(os.path.join(folder, CONFIG_FILE)) as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"The config of checkpoint {folder} is unreadable: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"The config of checkpoint {folder} is unreadable: not a JSON object.")
    return raw


def is_one_pass(raw: dict) -> bool:
    """Whether a checkpoint's config is a one-pass control's (these record their `variant`; LM4LV's do not)."""
    return "variant" in raw


# options the library had and no recipe, test or control uses (their measurements: research/README.md); a config
# recording them off still loads, one that used them is refused
REMOVED_OPTIONS = {
    "standardize": "per-dimension standardised features",
    "task_tokens_first": "task tokens first",
    "task_answer_positions": "answer position tables per task",
}


def read_config(folder: str) -> HeadsConfig:
    """A checkpoint's `lm4lv_config.json` as LM4LV's `HeadsConfig`; an unreadable one, or one trained with an option
    this version no longer has (`REMOVED_OPTIONS`), is a CheckpointError."""
    raw = read_raw_config(folder)
    used = [what for key, what in REMOVED_OPTIONS.items() if raw.pop(key, False)]
    if used:
        raise CheckpointError(
            f"Checkpoint {folder} was trained with {', '.join(used)}, which this version of LM4LV "
            f"no longer has (research/README.md keeps the measurements)."
        )
    try:
        raw["tasks"] = tuple(raw["tasks"])
        return HeadsConfig(**raw)
    except (TypeError, KeyError) as exc:
        raise CheckpointError(f"The config of checkpoint {folder} is unreadable: {exc}") from exc


def push_to_hub(
    restorer,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    model_card: str | os.PathLike | None = None,
    commit_message: str = "Upload LM4LV checkpoint",
) -> str:
    """Upload a trained model as a self-contained Hub model repository: its checkpoint files, its vision module in
    `vision/` (so `from_pretrained(repo_id)` needs nothing else), the PEFT files of a LoRA control, and `model_card`
    (a README.md with the Hub's YAML) if given. `$HF_ENDPOINT` is honoured. Returns the commit URL."""
    import shutil
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    with tempfile.TemporaryDirectory(prefix="lm4lv-push-") as staging:
        restorer.save_pretrained(staging, vision_path=VISION_SUBFOLDER)
        restorer.vision.save_pretrained(os.path.join(staging, VISION_SUBFOLDER))
        if model_card is not None:
            shutil.copyfile(model_card, os.path.join(staging, "README.md"))
        api.create_repo(repo_id, private=private, exist_ok=True)
        return str(api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message))
