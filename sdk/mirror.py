"""Prove entries from any chain node's public mirror, without an account (DESIGN §3.4).

A node serves its log over plain HTTP in the C2SP tlog-tiles paths (``/checkpoint``,
``/tile/<L>/<N>[.p/<W>]``, ``/tile/entries/<N>[.p/<W>]``). :class:`MirrorClient` fetches them;
:func:`prove_from_mirror` checks the checkpoint's signatures against the members and quorum at
its size, which follow from the consortium pinned by the caller (the genesis) and the votes on
the log (the MEMBERSHIP entries the mirror lists at ``/membership``, each proved against the
checkpoint and replayed; they go into the bundle too), builds each inclusion proof (and a
consistency proof from an older checkpoint) from the tiles itself, and verifies every proof
against the signed root before returning an evidence bundle. A mirror is trusted for nothing:
a wrong tile or entry makes a proof fail to verify. :class:`VerifiedMirror` is the same for a
client that reads many times: it keeps the checkpoint it verified (each newer one must be
consistent with it) and proves one leaf at a time against it.

::

    config = parse_consortium(Path("consortium.json").read_text())
    bundle = prove_from_mirror(MirrorClient("http://127.0.0.1:8061"), config, [12])
    Path("receipt.json").write_text(bundle.to_json())
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Iterable, Sequence

from chain.checkpoint import Checkpoint, parse_checkpoint, verify_sealed_checkpoint
from chain.consortium import ConsortiumConfig
from chain.entry import parse_entry
from chain.errors import (
    InvalidInputError,
    NotFoundError,
    SwiftchainError,
    UnavailableError,
    VerificationError,
)
from chain.evidence import ConsistencyEvidence, EvidenceBundle, EvidenceEntry
from chain.hashing import leaf_hash
from chain.membership import MemberSet, MembershipLog
from chain.note import parse_note
from chain.proof_build import consistency_proof, inclusion_proof
from chain.proof_verify import verify_consistency, verify_inclusion
from chain.tiles import (
    TILE_WIDTH,
    Tile,
    TiledHashReader,
    bundle_entries,
    entries_path,
    tile_path,
    tile_width,
)

__all__ = ["MirrorClient", "VerifiedMirror", "prove_from_mirror"]

#: The largest answer read: a full bundle of 256 entries of up to 65,535 bytes each.
_MAX_BODY = TILE_WIDTH * (2 + 0xFFFF)


class MirrorClient:
    """Fetches a mirror's checkpoint, tiles and entry bundles over one kept-alive connection
    (reconnected when the server closes it). Thread-safe; each call waits at most ``timeout``
    seconds for the server.

    Errors: :class:`~chain.errors.UnavailableError` when the mirror cannot be reached or answers
    with an error, :class:`~chain.errors.NotFoundError` for a 404, and
    :class:`~chain.errors.InvalidInputError` for a URL that is not ``http(s)://host[:port]``.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise InvalidInputError(
                f"expected a mirror URL http(s)://host[:port], got {base_url!r}"
            )
        if parsed.query or parsed.fragment:
            raise InvalidInputError(
                f"expected a mirror URL without ?query or #fragment, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self._scheme = parsed.scheme
        self._host = parsed.hostname
        self._port = parsed.port
        self._prefix = parsed.path.rstrip("/")
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )
        return kind(self._host, self._port, timeout=self._timeout)

    def get(self, path: str) -> bytes:
        """The body at ``path`` (relative to the mirror's URL, e.g. ``tile/0/000``)."""
        url = f"{self.base_url}/{path}"
        with self._lock:
            for attempt in (1, 2):
                if self._connection is None:
                    self._connection = self._connect()
                try:
                    self._connection.request("GET", f"{self._prefix}/{path}")
                    response = self._connection.getresponse()
                    body = response.read(_MAX_BODY + 1)
                    if response.will_close:
                        self._close()
                    break
                except (OSError, http.client.HTTPException) as error:
                    self._close()
                    if (
                        attempt == 2
                    ):  # once more on a fresh connection: a kept-alive one may be stale
                        raise UnavailableError(f"mirror {url}: {error}") from None
        if response.status == 404:
            raise NotFoundError(
                f"mirror {url}: 404 {body[:200].decode('utf-8', 'replace').strip()}"
            )
        if response.status != 200:
            raise UnavailableError(f"mirror {url}: HTTP {response.status} {response.reason}")
        if len(body) > _MAX_BODY:
            raise UnavailableError(f"mirror {url}: answer longer than {_MAX_BODY} bytes")
        return body

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._close()

    def checkpoint(self) -> bytes:
        """The latest sealed checkpoint as served (a signed note; not verified here)."""
        return self.get("checkpoint")

    def membership(self) -> list[int]:
        """The leaf indexes of the MEMBERSHIP entries the mirror lists, in log order (none from
        a mirror that serves no ``/membership``). Trusted for nothing: each is proved and
        replayed, and a vote left out leaves an older member set, under which a checkpoint
        sealed by the newer one fails."""
        try:
            body = self.get("membership")
        except NotFoundError:
            return []
        try:
            return sorted({int(line) for line in body.decode("ascii").split()})
        except (UnicodeDecodeError, ValueError):
            raise UnavailableError(
                f"mirror {self.base_url}: /membership: expected leaf indexes, one per line"
            ) from None

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """The blobs of ``tiles`` (a :data:`chain.tiles.TileReader`)."""
        return [self.get(tile_path(tile)) for tile in tiles]

    def entries(self, bundle: int, width: int) -> list[bytes]:
        """The first ``width`` entries of entry bundle ``bundle``."""
        data = self.get(entries_path(bundle, width))
        try:
            return bundle_entries(data, width)
        except InvalidInputError as error:
            raise UnavailableError(f"mirror {self.base_url}: bundle {bundle}: {error}") from None

    def entry(self, leaf_index: int, tree_size: int) -> bytes:
        """Entry ``leaf_index`` from the bundle as it is in the tree of ``tree_size`` leaves."""
        bundle = leaf_index // TILE_WIDTH
        width = tile_width(0, bundle, tree_size)
        return self.entries(bundle, width)[leaf_index % TILE_WIDTH]


def prove_from_mirror(
    client: MirrorClient,
    config: ConsortiumConfig,
    leaf_indexes: Iterable[int],
    since: bytes | None = None,
) -> EvidenceBundle:
    """An evidence bundle for ``leaf_indexes`` built from ``client``'s mirror alone, every proof
    verified against the latest checkpoint, whose signatures are checked against the members at
    its size: ``config`` (the pinned genesis) changed by the votes on the log, which the bundle
    carries with their proofs. With ``since`` (an older signed checkpoint), a consistency proof
    from it is added and verified.

    Raises :class:`~chain.errors.VerificationError` if the mirror serves something that does
    not verify, :class:`~chain.errors.InvalidInputError` for a leaf index the checkpoint does
    not cover or a ``since`` newer than it, and the errors of :class:`MirrorClient`.
    """
    note = client.checkpoint()
    checkpoint, reader, votes = _verified_checkpoint(client, note, config)
    size, root = checkpoint.size, checkpoint.root_hash
    entries = []
    for index in leaf_indexes:
        if not 0 <= index < size:
            raise InvalidInputError(
                f"expected a leaf index below {size} (the mirror's sealed tree size), got {index}"
            )
        entries.append(_proved_leaf(client, reader, index, root))
    consistency = []
    if since is not None:
        older = parse_checkpoint(parse_note(since).text)
        if older.size > size:
            raise InvalidInputError(
                f"expected an older checkpoint than the mirror's (tree size {size}), got one of "
                f"tree size {older.size}"
            )
        proof = consistency_proof(older.size, size, reader) if older.size else []
        verify_consistency(older.size, size, proof, older.root_hash, root)
        consistency.append(ConsistencyEvidence(since.decode("utf-8"), tuple(proof)))
    return EvidenceBundle(
        origin=config.origin,
        verifiers=tuple(m.verifier_key for m in config.members),
        quorum=config.quorum,
        checkpoint=note.decode("utf-8"),
        entries=tuple(entries),
        consistency=tuple(consistency),
        membership=votes,
    )


def _verified_checkpoint(
    client: MirrorClient, note: bytes, config: ConsortiumConfig
) -> tuple[Checkpoint, TiledHashReader, tuple[EvidenceEntry, ...]]:
    """The checkpoint in ``note``, its signatures verified against the members and quorum at
    its size: the pinned genesis ``config`` changed by the votes the mirror lists, each proved
    against the checkpoint's root and replayed as every node did. Votes proved in a root that
    the members they lead to did not sign prove nothing, so the signatures are checked last.
    Also the reader of its tree and the proved votes."""
    try:
        unverified = parse_checkpoint(parse_note(note).text)
    except InvalidInputError:  # let the verifier say what is wrong with it
        unverified = verify_sealed_checkpoint(note, config.verifiers, config.quorum, config.origin)
    size, root = unverified.size, unverified.root_hash
    reader = TiledHashReader(size, client.read_tiles)
    votes = tuple(_proved_leaf(client, reader, i, root) for i in client.membership() if i < size)
    log = MembershipLog(MemberSet.from_consortium(config))
    try:
        log.replay((vote.leaf_index, parse_entry(vote.entry)) for vote in votes)
    except SwiftchainError as error:
        raise VerificationError(
            f"mirror {client.base_url}: a MEMBERSHIP entry it lists is not a valid vote: {error}"
        ) from None
    members = log.members_at(size)
    checkpoint = verify_sealed_checkpoint(note, members.verifiers, members.quorum, config.origin)
    return checkpoint, reader, votes


def _proved_leaf(
    client: MirrorClient, reader: TiledHashReader, index: int, root: bytes
) -> EvidenceEntry:
    """Leaf ``index`` (below ``reader.size``) from the mirror, its inclusion proof built from the
    tiles and verified against ``root``, the root of the tree of ``reader.size`` leaves."""
    size = reader.size
    entry = client.entry(index, size)
    proof = inclusion_proof(index, size, reader)
    verify_inclusion(leaf_hash(entry), index, size, proof, root)
    return EvidenceEntry(index, entry, tuple(proof))


class VerifiedMirror:
    """What a client that reads a mirror many times keeps: the latest checkpoint it verified
    (the quorum's signatures checked against the members at its size, from ``config``, the
    pinned genesis, and the votes on the log) and proofs of
    single leaves against it. A newer checkpoint is taken only with a consistency proof from the
    one held (built from the tiles and verified), so every leaf proved through one
    ``VerifiedMirror`` is in one append-only history. Not thread-safe: one per client thread.

    Errors: those of :func:`prove_from_mirror`, and :class:`~chain.errors.VerificationError`
    when the mirror's checkpoint is older than the one held.
    """

    def __init__(self, client: MirrorClient, config: ConsortiumConfig) -> None:
        self.client = client
        self.config = config
        self._checkpoint: Checkpoint | None = None
        self._note = b""
        self._reader = TiledHashReader(0, client.read_tiles)

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint verified last (None before the first :meth:`refresh`)."""
        return self._checkpoint

    @property
    def note(self) -> bytes:
        """The signed note of :attr:`checkpoint` (empty before the first :meth:`refresh`)."""
        return self._note

    def refresh(self) -> Checkpoint:
        """Fetch the mirror's latest checkpoint, verify its signatures and its consistency with
        the checkpoint held, and hold it from now on."""
        note = self.client.checkpoint()
        checkpoint, reader, _ = _verified_checkpoint(self.client, note, self.config)
        held = self._checkpoint
        if held is not None and held.size > checkpoint.size:
            raise VerificationError(
                f"mirror {self.client.base_url} serves a checkpoint of tree size "
                f"{checkpoint.size}, older than the one verified before ({held.size})"
            )
        if held is not None and held.size:
            proof = consistency_proof(held.size, checkpoint.size, reader)
            verify_consistency(
                held.size, checkpoint.size, proof, held.root_hash, checkpoint.root_hash
            )
        self._checkpoint, self._note, self._reader = checkpoint, note, reader
        return checkpoint

    def prove(self, leaf_index: int) -> EvidenceEntry:
        """Leaf ``leaf_index`` with its inclusion proof, verified against the checkpoint held
        (refreshed first if there is none yet or the leaf is past it); InvalidInputError if
        the mirror's latest checkpoint does not cover the leaf either."""
        held = self._checkpoint
        if held is None or leaf_index >= held.size:
            held = self.refresh()
        if not 0 <= leaf_index < held.size:
            raise InvalidInputError(
                f"expected a leaf index below {held.size} (the mirror's sealed tree size), "
                f"got {leaf_index}"
            )
        return _proved_leaf(self.client, self._reader, leaf_index, held.root_hash)
