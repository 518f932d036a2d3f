"""Create or update a Hugging Face Space with what the demo needs, and nothing else.

    python -m app.deploy_space USER/NAME [--dry-run] [--private]

The Hub client uploads the files (binaries through LFS / Xet, by itself); no git history travels, so the Hub's
limits on files stored in git do not apply. Only the allow-listed paths go: the app, the library, the checkpoints the
demo loads, requirements.txt, README.md (the Space's front matter) and LICENSE; nothing of train/, tests/, research/
or experiment checkpoints. `--dry-run` lists each file with its size and the total, and uploads nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE_FILES = ("app.py", "requirements.txt", "README.md", "LICENSE", ".gitattributes")
SPACE_FOLDERS = ("app", "lm4lv_core", "checkpoints")  # checkpoints/ holds only what the product loads
SKIPPED = ("__pycache__", "*.pyc", "*.csv", ".DS_Store")  # caches and training logs: not what the demo loads


def space_files(root: str = ROOT) -> list[str]:
    """The repository paths (relative, '/'-separated, sorted) that make the Space."""
    paths = [f for f in SPACE_FILES if os.path.isfile(os.path.join(root, f))]
    for folder in SPACE_FOLDERS:
        for base, dirs, names in os.walk(os.path.join(root, folder)):
            dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, p) for p in SKIPPED)]
            for name in names:
                if not any(fnmatch.fnmatch(name, p) for p in SKIPPED):
                    paths.append(os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/"))
    return sorted(paths)


def listing(paths: list[str], root: str = ROOT) -> str:
    """One line per file with its size, then the total."""
    sizes = [os.path.getsize(os.path.join(root, p)) for p in paths]
    lines = [f"{size / 1e6:9.3f} MB  {path}" for path, size in zip(paths, sizes)]
    return "\n".join(lines + [f"{sum(sizes) / 1e6:9.3f} MB  total, {len(paths)} files"])


def deploy(repo_id: str, private: bool = False, token: str | None = None, root: str = ROOT) -> str:
    """Create the Space if needed (Gradio SDK) and upload the allow-listed files; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=root,
        allow_patterns=space_files(root),
        commit_message="Deploy LM4LV demo",
    )
    return str(commit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo_id", help="the Space, USER/NAME")
    p.add_argument("--dry-run", action="store_true", help="list the files and their sizes; upload nothing")
    p.add_argument("--private", action="store_true", help="create the Space private")
    args = p.parse_args(argv)
    if args.repo_id.count("/") != 1:
        raise SystemExit(f"{args.repo_id!r} is not a Space id: give USER/NAME.")
    print(listing(space_files()))
    if args.dry_run:
        return 0
    print(f"uploaded: {deploy(args.repo_id, args.private)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
