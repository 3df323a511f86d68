"""What the history no longer keeps, deleted by the push that makes it fall out."""

from __future__ import annotations

from contextlib import suppress

from fileconsul.batching import batches
from fileconsul.consul import TXN_MAX_OPS, Op, kv_delete, kv_delete_tree
from fileconsul.errors import FileconsulError
from fileconsul.history import Head
from fileconsul.keys import blobs_prefix, log_prefix, manifests_prefix, revision_of
from fileconsul.run import Run


def collect(run: Run, head: Head) -> None:
    """Delete what the history no longer keeps: records before the oldest revision, the
    contents kept for revisions up to it (they restore revisions before it), and every
    manifest but the head's. Best effort: what is left is collected by a later push."""
    prefix = run.prefix
    doomed: list[Op] = []
    with suppress(FileconsulError):
        if head.oldest > 1:
            logs, _ = run.client.keys(log_prefix(prefix))
            doomed += [kv_delete(k) for k in logs if (revision_of(k) or head.oldest) < head.oldest]
            folders, _ = run.client.keys(blobs_prefix(prefix), separator="/")
            doomed += [
                kv_delete_tree(k)
                for k in folders
                if (revision_of(k) or head.oldest + 1) <= head.oldest
            ]
        manifests, _ = run.client.keys(manifests_prefix(prefix))
        doomed += [
            kv_delete(k) for k in manifests if (revision_of(k) or head.revision) < head.revision
        ]
        for batch in batches(doomed, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
            run.client.txn(batch)
