"""Which managed files were changed here by hand: the local tree scanned (the hash cache
spares reading unchanged files) and compared with the base of the last sync."""

from __future__ import annotations

from contextlib import suppress

from fileconsul.commands.context import Context
from fileconsul.errors import ConflictError
from fileconsul.local import record as records
from fileconsul.local import scan
from fileconsul.local.lock import local_lock
from fileconsul.model.drift import Drift, drifted


def look(ctx: Context) -> list[Drift] | None:
    """The drift of this node's tree, or None when another fileconsul is changing it now
    (what it sees mid-apply is not drift: ask again later)."""
    with suppress(ConflictError), local_lock(ctx.basepath, wait=0):
        record = records.load(ctx.basepath, ctx.prefix)
        local = scan.scan(ctx.basepath, record.hash_cache)
        if record.exists and local.hash_cache != record.hash_cache:
            record.hash_cache = local.hash_cache
            records.save_cache(ctx.basepath, record)
        managed = {p: i for p, i in record.files.items() if not local.ignored(p)}
        return drifted(managed, local.files)
    return None
