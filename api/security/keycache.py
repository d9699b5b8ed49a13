"""The gateway's cache of API-key lookups: a key that authenticated is not looked up again for
API_KEY_CACHE_SECONDS (keyed by the key's SHA-256, as the database keys it; the key itself is never
held), and a revocation reaches every gateway within a second.

- A revocation NOTIFYs `specmill_api_keys` with the key's id when it commits (store/tenants.py:
  revoke_api_key). Each gateway LISTENs on its own connection (store/listen.py) and drops that key's
  entry as the notification arrives; the gateway that revoked it drops it at once (api/routes/keys.py).
- Entries are served only while that LISTEN is in place. When its connection drops, every entry is
  dropped and every request looks its key up until the LISTEN is back (then the cache fills again):
  a revocation sent meanwhile is never missed.
- A lookup that was under way when a revocation (or a loss) arrived does not store its answer: it may
  have read the row before the revocation committed.
- Only keys that authenticated are kept, never an unknown or revoked one; the TTL bounds an entry's
  life in any case, and MAX_ENTRIES the memory (the oldest go first).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from uuid import UUID

from models.auth import Principal
from store.listen import Listener
from store.tenants import REVOKED_CHANNEL

MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    expires_at: float  # time.monotonic()


class KeyCache:
    def __init__(self, dsn: str, *, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._epoch = 0  # moves on every revocation, loss and reconnect: see `put`
        self._listener = Listener(dsn, REVOKED_CHANNEL, on_notify=self._revoked, on_up=self.clear, on_down=self.clear)

    def start(self) -> None:
        self._listener.start()

    async def close(self) -> None:
        await self._listener.close()
        self.clear()

    @property
    def listening(self) -> bool:
        """Whether entries may be served now (the LISTEN for revocations is in place)."""
        return self._listener.connected

    @property
    def listener(self) -> Listener:
        return self._listener

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: str) -> Principal | None:
        if not self.listening:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry.expires_at <= time.monotonic():
            del self._entries[key_hash]
            return None
        return entry.principal

    def epoch(self) -> int:
        """Taken before a lookup; `put` stores the lookup's answer only if nothing moved it since."""
        return self._epoch

    def put(self, key_hash: str, principal: Principal, epoch: int) -> None:
        if epoch != self._epoch or not self.listening:
            return
        if len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key_hash] = _Entry(principal, time.monotonic() + self.ttl_s)

    def forget(self, key_id: UUID) -> None:
        """Drop the key's entry (revoked), and the answers of lookups under way."""
        self._epoch += 1
        for key_hash, entry in list(self._entries.items()):
            if entry.principal.key_id == key_id:
                del self._entries[key_hash]

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()

    def _revoked(self, payload: str) -> None:
        try:
            self.forget(UUID(payload))
        except ValueError:  # not a key id: whatever it meant, nothing cached is trusted
            self.clear()
