"""`--push-to-hub user/name`: upload an HF export folder as a dataset repository (huggingface_hub).

The folder is written first and kept whatever happens here; no token, offline mode or a network
failure is one line that says so.
"""

from __future__ import annotations

import re
from pathlib import Path

from datagen.errors import InputError, Unavailable, one_line

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def check_repo_id(repo: str) -> None:
    if not REPO_ID.match(repo) or ".." in repo or repo.endswith((".", "-")):
        raise InputError(f"--push-to-hub {repo!r}: give a Hub dataset id as user/name")


def push(folder: Path, repo: str, *, private: bool = False) -> str:
    """Create (or reuse) the dataset repo and upload the folder; returns its URL."""
    check_repo_id(repo)
    kept = f"; the export is kept in {folder}"
    try:
        import huggingface_hub
        from huggingface_hub import HfApi, constants
    except ImportError:
        raise InputError(f"pushing needs huggingface_hub (pip install 'datagen[hub]'){kept}") from None
    if constants.HF_HUB_OFFLINE:
        raise InputError(f"cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE){kept}")
    token = huggingface_hub.get_token()
    if not token:
        raise InputError(f"cannot push to the Hub: no token (set HF_TOKEN or run `hf auth login`){kept}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True, private=private)
        api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset", commit_message="datagen export")
    except Exception as exc:  # noqa: BLE001 - network, auth, quota: whatever the Hub says, in one line
        raise Unavailable(f"push to {repo} failed: {type(exc).__name__}: {one_line(exc)}{kept}") from None
    return f"{constants.ENDPOINT.rstrip('/')}/datasets/{repo}"
