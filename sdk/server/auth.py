"""Token auth: `authorization: Bearer <token>` metadata -> tenant (reliability.md S1, S3).

Token file: one `TOKEN [TENANT]` per line (TENANT defaults to the token's line number, "tenant<N>"); blank lines
and lines starting with # are ignored. Tokens are compared in constant time. Without a token file every call
is tenant "default". The token never appears in a log or an error message (S9).
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TokenTable", "AuthError", "DEFAULT_TENANT", "AUTH_HEADER"]

DEFAULT_TENANT = "default"
AUTH_HEADER = "authorization"
_MIN_TOKEN = 16   # characters: a token shorter than 16 (~96 bits of base64) is guessable


class AuthError(Exception):
    """Missing or unknown token (-> UNAUTHENTICATED)."""


@dataclass(frozen=True)
class TokenTable:
    entries: tuple[tuple[bytes, str], ...] = ()   # (token, tenant); empty = auth off

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None) -> "TokenTable":
        if path is None:
            return cls()
        entries = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) > 2:
                raise ValueError(f"{path}:{number}: expected 'TOKEN [TENANT]', got {len(parts)} fields")
            if len(parts[0]) < _MIN_TOKEN:
                raise ValueError(f"{path}:{number}: token is {len(parts[0])} characters; at least {_MIN_TOKEN}")
            entries.append((parts[0].encode(), parts[1] if len(parts) == 2 else f"tenant{number}"))
        if not entries:
            raise ValueError(f"{path}: no tokens (an empty token file would turn auth off; omit --token-file "
                             "instead)")
        return cls(tuple(entries))

    def tenant(self, metadata) -> str:
        """The caller's tenant from gRPC invocation metadata, or AuthError."""
        if not self.enabled:
            return DEFAULT_TENANT
        values = [v for k, v in (metadata or ()) if k == AUTH_HEADER]
        if len(values) != 1:
            raise AuthError("missing authorization metadata ('authorization: Bearer <token>')" if not values
                            else "more than one authorization header")
        value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization metadata must be 'Bearer <token>'")
        given = token.strip().encode()
        found = None
        for known, tenant in self.entries:   # no early exit: the time does not depend on which token matched
            if hmac.compare_digest(known, given):
                found = tenant
        if found is None:
            raise AuthError("invalid token")
        return found
