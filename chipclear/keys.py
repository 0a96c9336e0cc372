"""Key files: a person's (or the recorder's) Ed25519 key pair under `$CHIPCLEAR_HOME/keys`.

The private key is written once, 0600 in a 0700 directory, and never printed; the public key is a
line `ed25519:<base64>` beside it (`NAME.pub`), for a policy to name with `key = "file:keys/NAME.pub"`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from chipclear.domain import signing
from chipclear.domain.input_gate import read_as, read_limited, read_text
from chipclear.domain.policy import BUNDLED, bundled_policy_path
from chipclear.domain.signing import RESERVED_ACTORS, SigningError, parse_public

KEYS_DIR = "keys"
RECORDER = "recorder"  # the worker's own key: seals events, signs checkpoints
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or not an Ed25519 key; the message names the path only."""


def keys_dir(home: Path) -> Path:
    return home / KEYS_DIR


def private_path(home: Path, name: str) -> Path:
    return keys_dir(home) / f"{name}.key"


def public_path(home: Path, name: str) -> Path:
    return keys_dir(home) / f"{name}.pub"


def check_name(name: str, *, recorder_allowed: bool = False) -> str:
    if not NAME.match(name):
        raise KeyFileError(
            f"{name!r}: a key name is 1-64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    if name in RESERVED_ACTORS and not (recorder_allowed and name == RECORDER):
        raise KeyFileError(f"{name!r} is reserved for the system's own acts; choose a person's name")
    return name


def new_key(home: Path, name: str, *, recorder_allowed: bool = False) -> tuple[Path, str]:
    """Make NAME's key pair; refuse to overwrite one that exists (a lost key is replaced on purpose)."""
    check_name(name, recorder_allowed=recorder_allowed)
    target = private_path(home, name)
    if target.exists():
        raise KeyFileError(f"{target}: a key named {name!r} exists already; it is never overwritten")
    private = Ed25519PrivateKey.generate()
    public = public_text(private)
    make_private_dir(home)
    make_private_dir(keys_dir(home))
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    public_path(home, name).write_text(public + "\n")
    return target, public


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


# A PEM key is a few hundred bytes; a path to /dev/zero or a log file must not be read whole.
MAX_KEY_FILE = 64 * 1024


def load_private(path: Path) -> Ed25519PrivateKey:
    missing = "no key file there (make one with `chipclear keys new NAME`)"
    data = read_as(KeyFileError, read_limited, path, limit=MAX_KEY_FILE, what="key file", missing=missing)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path}: not a PEM private key without a passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return key


def public_text(private: Ed25519PrivateKey) -> str:
    return signing.public_text(private.public_key())


def read_public(path: Path) -> str:
    """The `ed25519:…` text of a `.pub` file (its last word, so `NAME ed25519:…` reads too), checked."""
    what, missing = "public key file", "no public key file there"
    words = read_as(KeyFileError, read_text, path, limit=MAX_KEY_FILE, what=what, missing=missing).split()
    text = words[-1] if words else ""
    try:
        parse_public(text, what=str(path))
    except SigningError as exc:
        raise KeyFileError(str(exc)) from None
    return text


def person_key_file(
    person: str, home: Path, explicit: Path | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """Which private key signs for `person`: --key, then $CHIPCLEAR_KEY_FILE, then the home's key."""
    env = os.environ if env is None else env
    if explicit is not None:
        return explicit
    if env.get("CHIPCLEAR_KEY_FILE"):
        return Path(env["CHIPCLEAR_KEY_FILE"])
    return private_path(home, person)


def recorder_key_file(home: Path, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CHIPCLEAR_RECORDER_KEY_FILE") or private_path(home, RECORDER))


def provide_missing(home: Path, policy: str | Path | None) -> list[tuple[str, Path]]:
    """Make every key pair the policy names by `file:keys/NAME.pub` that `home` lacks (a dev home).

    For `chipclear up`, the demo and the benchmark on a fresh home: production keys are made by each
    person on their own machine (`chipclear keys new`), and a worker never makes one.
    """
    made: list[Path] = []
    for reference in _file_keys(policy):
        relative = Path(reference.removeprefix("file:"))
        if relative.parent != Path(KEYS_DIR) or relative.suffix != ".pub" or relative.is_absolute():
            continue  # a key kept elsewhere is somebody else's to make
        if not (home / relative).exists() and not private_path(home, relative.stem).exists():
            made.append(new_key(home, relative.stem, recorder_allowed=True)[0])
    return [(path.stem, path) for path in made]


def _file_keys(policy: str | Path | None) -> list[str]:
    path = (
        bundled_policy_path(str(policy or "default"))
        if policy is None or str(policy) in BUNDLED
        else Path(policy)
    )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []  # loading the policy says what is wrong with it
    people = raw.get("reviewers") or {}
    found = [t.get("key") for t in people.values() if isinstance(t, dict)]
    recorder = raw.get("recorder") or {}
    found += list(recorder.get("keys") or []) if isinstance(recorder, dict) else []
    return [k for k in found if isinstance(k, str) and k.startswith("file:")]
