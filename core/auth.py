"""API keys: each key belongs to one project, or to all projects with `*` (DESIGN §9).

Configured with TRACEHOUSE_API_KEYS="key1=project_a,key2=*" or a file (--api-keys-file) with
one `key=project` per line (`#` starts a comment). Keys are looked up by their SHA-256, so the
lookup time says nothing about how much of a guessed key was right.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

ALL_PROJECTS = "*"
API_KEY_HEADER = "x-tracehouse-api-key"
PROJECT_HEADER = "x-tracehouse-project"


class ApiKeyError(ValueError):
    pass


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, keys: Mapping[str, str] | None = None):
        self._projects = {_digest(k): p for k, p in (keys or {}).items()}

    @property
    def enabled(self) -> bool:
        return bool(self._projects)

    def project_for(self, key: str | None) -> str | None:
        """The key's project (`*` for all); None when the key is missing or unknown."""
        if not key:
            return None
        return self._projects.get(_digest(key))

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKeys:
        keys: dict[str, str] = {}
        entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
        # Messages name an entry by its position, never by its text: the text holds a secret.
        for number, entry in enumerate(filter(None, entries), 1):
            key, sep, project = entry.partition("=")
            if not sep:
                key, _, project = entry.partition(" ")
            key, project = key.strip(), project.strip()
            if not key or not project:
                raise ApiKeyError(f"{source}: entry {number} must look like key=project (or key=* for all projects)")
            if len(key) < 8:
                raise ApiKeyError(f"{source}: the key for project {project!r} is shorter than 8 characters; use a longer random key")
            keys[key] = project
        if not keys:  # set but empty would silently turn authentication off
            raise ApiKeyError(f"{source}: no key=project entries found")
        return cls(keys)

    @classmethod
    def load(cls, env_value: str | None, file: Path | None) -> ApiKeys:
        keys = cls()
        if env_value:
            keys = cls.parse(env_value, "TRACEHOUSE_API_KEYS")
        if file is not None:
            try:
                text = Path(file).read_text()
            except OSError as exc:
                raise ApiKeyError(f"--api-keys-file: cannot read {file}: {exc.strerror}") from None
            keys._projects.update(cls.parse(text, f"--api-keys-file {file}")._projects)
        return keys


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key from `Authorization: Bearer …` or `x-tracehouse-api-key` (lower-case names)."""
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return headers.get(API_KEY_HEADER) or None
