"""Where things live in Consul.

Files are keys under `<prefix>/`, and nothing else is: everything fileconsul keeps for a tree
lives beside it, under `<prefix>.fileconsul/`, so raw readers and watchers of the prefix see
only files, and a write there never moves the prefix's listing index.
"""

from __future__ import annotations

from fileconsul.model.paths import INTERNAL_DIR, MANIFEST_PATH, META_SUFFIX
from fileconsul.model.tree import RemoteTree

#: Revisions are written with this many digits, so that they sort as text and no revision's
#: key is a prefix of another's.
REVISION_DIGITS = 10


def file_key(prefix: str, path: str) -> str:
    return f"{prefix}/{path}"


def meta_prefix(prefix: str) -> str:
    return f"{prefix}{META_SUFFIX}/"


def head_key(prefix: str) -> str:
    """The head: the revision committed last, small, check-and-set by every commit."""
    return meta_prefix(prefix) + "head"


def tick_key(prefix: str) -> str:
    """A key a commit that changes only modes sets and deletes in its last transaction: an
    unchanged value moves no index, and watchers wake on the prefix's listing. It never
    outlives the transaction, and readers pass over it (it is under `<prefix>/.fileconsul/`)."""
    return file_key(prefix, INTERNAL_DIR + "/tick")


def genesis_key(prefix: str) -> str:
    """The history the head belongs to, rewritten by every commit: it outlives a deleted
    head, so that a new history knows an old one was there."""
    return meta_prefix(prefix) + "genesis"


def _rev(revision: int) -> str:
    return f"{revision:0{REVISION_DIGITS}d}"


def manifests_prefix(prefix: str) -> str:
    return meta_prefix(prefix) + "manifests/"


def manifest_key(prefix: str, revision: int) -> str:
    """The full manifest of a revision (only the head's is kept)."""
    return manifests_prefix(prefix) + _rev(revision)


def log_prefix(prefix: str) -> str:
    return meta_prefix(prefix) + "log/"


def log_key(prefix: str, revision: int) -> str:
    """A revision's commit record: who, when, why, and its changes."""
    return log_prefix(prefix) + _rev(revision)


def blobs_prefix(prefix: str, revision: int | None = None) -> str:
    """Where the contents a revision replaced or deleted are kept, by content hash."""
    base = meta_prefix(prefix) + "blobs/"
    return base if revision is None else f"{base}{_rev(revision)}/"


def blob_key(prefix: str, revision: int, digest: str) -> str:
    return blobs_prefix(prefix, revision) + digest


def sealed_prefix(prefix: str) -> str:
    """Where a signed tree's tables of strong hashes live, each under the revision that wrote
    it and its own hash."""
    return meta_prefix(prefix) + "sealed/"


def bucket_key(prefix: str, ref: str) -> str:
    return sealed_prefix(prefix) + ref


def content_key(tree: RemoteTree, path: str) -> str:
    """Where the content `tree` holds for `path` is: its own key, or, when a push that did
    not commit replaced it, where that push set it aside."""
    if path in tree.set_aside and tree.dead_push is not None:
        return blob_key(tree.prefix, tree.dead_push.revision, tree.files[path].hash)
    return file_key(tree.prefix, path)


def revision_of(key: str) -> int | None:
    """The revision a log, manifest or blob-folder key names; None for anything else."""
    name = key.rstrip("/").rpartition("/")[2]
    return int(name) if len(name) == REVISION_DIGITS and name.isdigit() else None


def lock_key(prefix: str) -> str:
    """Taking the push lock wakes no watcher and moves no listing index."""
    return meta_prefix(prefix) + "lock"


def nodes_prefix(prefix: str) -> str:
    """Where each node's fleet report lives."""
    return meta_prefix(prefix) + "nodes/"


def slots_prefix(prefix: str) -> str:
    """`watch --max-parallel`'s semaphore: each contender's key, and the holders."""
    return meta_prefix(prefix) + "slots/"


def holders_key(prefix: str) -> str:
    return slots_prefix(prefix) + "holders"


def halt_key(prefix: str) -> str:
    """A halted rollout: the revision, the node, the time and why."""
    return meta_prefix(prefix) + "halt"


def head_and_halt_prefix(prefix: str) -> str:
    """A string prefix (not a folder) that holds the head and the halt and nothing else: a
    blocking query on it wakes at a commit and at a halt written or lifted."""
    return meta_prefix(prefix) + "h"


def replicator_key(prefix: str) -> str:
    """In a replica: the lock of the one replicator that writes it, held by its session."""
    return meta_prefix(prefix) + "replicator"


# The first format kept its manifest inside the tree and its lock and reports beside it: read
# (and, by the next push, upgraded), never written.


def legacy_manifest_key(prefix: str) -> str:
    return file_key(prefix, MANIFEST_PATH)


def legacy_lock_key(prefix: str) -> str:
    return f"{prefix}.lock"
