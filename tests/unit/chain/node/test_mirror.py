"""chain/node/mirror.py over a real socket: the log's files in tlog-tiles paths, read-only, up to
the latest sealed checkpoint, with the caching headers a CDN needs."""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.hashing import leaf_hash
from chain.node.mirror import IMMUTABLE, MirrorServer
from chain.node.tile_store import TileStore
from chain.tiles import MemoryHashStore, Tile, bundle_entries, tile_bytes, tiles_touched

NOTE = "test/log\n300\nAAAA\n\n\u2014 hospital-a AAAA\n"


class Mirror:
    def __init__(self, root: Path) -> None:
        self.tiles = TileStore(root)
        self.tree = MemoryHashStore()
        self.entries = [f"entry {i}".encode() for i in range(300)]
        self.tree.extend(leaf_hash(e) for e in self.entries)
        self.tiles.write_log(
            0,
            self.entries,
            [(t.level, t.index, t.width, tile_bytes(self.tree, t)) for t in tiles_touched(0, 300)],
        )
        self.sealed: tuple[int, str] | None = None
        self.server = MirrorServer("127.0.0.1", 0, self.tiles, lambda: self.sealed).start()
        self.connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)

    def get(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.connection.request(method, path, headers=headers or {})
        response = self.connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    made = Mirror(tmp_path)
    yield made
    made.connection.close()
    made.server.stop()


def test_nothing_is_served_before_a_checkpoint_is_sealed(mirror: Mirror) -> None:
    status, headers, body = mirror.get("/checkpoint")
    assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")
    assert body == b"not found: no checkpoint has been sealed yet\n"
    assert mirror.get("/tile/0/000")[0] == 404


def test_the_checkpoint_and_the_tiles_it_covers(mirror: Mirror) -> None:
    mirror.sealed = (300, NOTE)
    status, headers, body = mirror.get("/checkpoint")
    assert (status, body.decode()) == (200, NOTE)
    assert headers["cache-control"] == "no-cache"
    status, headers, body = mirror.get("/tile/0/000")
    assert (status, body) == (200, tile_bytes(mirror.tree, Tile(0, 0, 256)))
    assert headers["cache-control"] == IMMUTABLE
    assert headers["content-type"] == "application/octet-stream"
    status, headers, body = mirror.get("/tile/0/001.p/44")
    assert (status, body) == (200, tile_bytes(mirror.tree, Tile(0, 1, 44)))
    assert headers["cache-control"] != IMMUTABLE
    # an older checkpoint's partial tile: a prefix of the wider one on disk
    assert mirror.get("/tile/0/001.p/3")[2] == tile_bytes(mirror.tree, Tile(0, 1, 3))
    assert mirror.get("/tile/1/000.p/1")[2] == tile_bytes(mirror.tree, Tile(1, 0, 1))
    status, _, body = mirror.get("/tile/entries/000")
    assert (status, bundle_entries(body)) == (200, mirror.entries[:256])
    assert bundle_entries(mirror.get("/tile/entries/001.p/2")[2]) == mirror.entries[256:258]


def test_what_the_sealed_checkpoint_does_not_cover_is_not_served(mirror: Mirror) -> None:
    mirror.sealed = (260, NOTE)  # the files hold 300 entries, 260 are sealed
    assert mirror.get("/tile/0/001.p/4")[0] == 200
    for path in ("/tile/0/001.p/5", "/tile/entries/001.p/44", "/tile/0/002", "/tile/1/000"):
        status, _, body = mirror.get(path)
        assert status == 404, path
        assert body.endswith(b"is not in the log as of the latest sealed checkpoint\n")


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/tile/",
        "/tile/0/0",
        "/tile/0/000/",
        "/tile/0/../../checkpoint",
        "/tile/%2e%2e/checkpoint",
        "/checkpoint?x=1",
        "/checkpoint/",
        "//checkpoint",
        "/tile/0/000.p/256",
        "/tile/entries/x000/000",
        "/etc/passwd",
        "/tile/0/" + "x001/" * 30 + "000",
    ],
)
def test_a_path_that_is_not_exactly_a_tlog_tiles_path_is_404(mirror: Mirror, path: str) -> None:
    mirror.sealed = (300, NOTE)
    status, headers, body = mirror.get(path)
    assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")
    assert body.startswith(b"not found: ")


def test_it_is_read_only(mirror: Mirror) -> None:
    mirror.sealed = (300, NOTE)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, body = mirror.get("/tile/0/000", method=method)
        assert (status, headers["allow"]) == (405, "GET, HEAD")
        assert body == f"{method} is not allowed: this mirror is read-only (GET, HEAD)\n".encode()


def test_etags_head_and_gzip(mirror: Mirror) -> None:
    mirror.sealed = (300, NOTE)
    _, headers, body = mirror.get("/tile/entries/000")
    etag = headers["etag"]
    status, again, empty = mirror.get("/tile/entries/000", headers={"If-None-Match": etag})
    assert (status, again["etag"], empty) == (304, etag, b"")
    status, head, empty = mirror.get("/tile/entries/000", method="HEAD")
    assert (status, head["content-length"], empty) == (200, str(len(body)), b"")
    status, zipped, packed = mirror.get(
        "/tile/entries/000", headers={"Accept-Encoding": "br, gzip;q=0.8"}
    )
    assert (status, zipped["content-encoding"]) == (200, "gzip")
    assert gzip.decompress(packed) == body and len(packed) < len(body)
    assert zipped["etag"] != etag
    refused = mirror.get("/tile/entries/000", headers={"Accept-Encoding": "gzip;q=0"})[1]
    assert "content-encoding" not in refused
