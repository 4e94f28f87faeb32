"""Push a trained adapter folder to a Hugging Face hub model repo, with a token the user supplies for that call.

The token is passed straight to ``huggingface_hub`` for this one upload: it is never stored, logged or put in an
error message. Only the adapter's safe files are uploaded (safetensors weights, JSON configs, the model card).
"""

from __future__ import annotations

import re
from pathlib import Path

from playground.engine.adapters import AdapterError, validate_adapter_dir

# owner/name: letters, digits, '-', '_' and '.', each part 1-96 characters, not starting or ending with '-' or '.'
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?/"
                             r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
UPLOAD_PATTERNS = ["adapter_config.json", "adapter_model.safetensors", "meta.json", "README.md"]
TOKEN_HELP = ("Paste a Hugging Face access token with write permission (https://huggingface.co/settings/tokens). "
              "It is used for this upload only and never stored.")


class HubError(ValueError):
    """The push cannot be done (no token, a bad repo id, not an adapter, the hub refused); the message says why."""


def validate_repo_id(raw: str | None) -> str:
    """``owner/name`` as the hub spells it; anything else is refused with the reason."""
    repo_id = (raw or "").strip()
    if not repo_id:
        raise HubError("Give the hub repository as owner/name, e.g. your-username/my-dpo-adapter.")
    if ".." in repo_id or "--" in repo_id or repo_id.count("/") != 1 or not REPO_ID_PATTERN.match(repo_id):
        raise HubError(f"{repo_id!r} is not a hub repository id: use owner/name with letters, digits, '-', '_' or "
                       "'.' (no '..' or '--', at most 96 characters per part).")
    return repo_id


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push_adapter(adapter_dir: str | Path, repo_id: str, token: str | None, *, private: bool = True,
                 commit_message: str | None = None) -> str:
    """Upload the adapter at ``adapter_dir`` to the model repo ``repo_id`` (created private when missing).

    Returns the repo's URL. Raises HubError: no token, an invalid repo id, a folder that is not a safetensors LoRA
    adapter, or the hub's refusal (wrong token, no write access, network) in words, without the token.
    """
    token = (token or "").strip()
    if not token:
        raise HubError("No Hugging Face token: " + TOKEN_HELP)
    repo_id = validate_repo_id(repo_id)
    folder = Path(adapter_dir)
    try:
        validate_adapter_dir(folder)
    except AdapterError as exc:
        raise HubError(f"Not pushed: {exc}") from None
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    message = commit_message or f"Upload adapter {folder.name} from the DPO vs KTO playground"
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          allow_patterns=list(UPLOAD_PATTERNS),
                          commit_message=message)
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one message without the token
        why = _scrub(f"{type(exc).__name__}: {exc}", token)
        raise HubError(f"The hub refused the upload to {repo_id} ({why}). Check that the token has write "
                       "access to that namespace and that the network is reachable.") from None
    return str(getattr(url, "url", None) or f"https://huggingface.co/{repo_id}")
