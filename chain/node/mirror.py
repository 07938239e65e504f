"""The node's public mirror: its log read-only over HTTP, anonymously, in the C2SP tlog-tiles
paths (DESIGN §3.4).

* ``GET /checkpoint``: the latest sealed checkpoint, the signed note with the quorum's lines;
* ``GET /tile/<L>/<N>[.p/<W>]``: hash tiles; ``GET /tile/entries/<N>[.p/<W>]``: entry bundles
  (big-endian uint16 length-prefixed entries);
* ``GET /membership`` (not a tlog-tiles path): the leaf indexes of the MEMBERSHIP entries below
  the latest sealed checkpoint's size, one per line, so that a client holding only the genesis
  can prove and replay the votes that decide who signs that checkpoint (``sdk/mirror.py``). It
  proves nothing itself: a client proves each entry against the checkpoint and replays it.

Only what the latest sealed checkpoint covers is served: a tile or bundle wider than the sealed
tree is 404, as is every path that is not exactly one of the above (no query strings, no other
spellings of a number, no directory listing); the path is parsed into numbers and the file name
made from them, so nothing else on disk can be reached. Methods other than GET and HEAD are 405.
Full tiles and bundles never change: ``Cache-Control: public, max-age=31536000, immutable``.
Every answer has an ``ETag`` (``If-None-Match`` gets 304) and is gzipped when the client asks.

A threaded ``http.server`` with HTTP/1.1 keep-alive; ``bench/mirror_bench.py`` measures it
against ``python -m http.server`` serving the same folder.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chain.errors import InvalidInputError
from chain.node.tile_store import ENTRIES, TileStore
from chain.tiles import TILE_WIDTH, parse_entries_path, parse_tile_path, tile_width

__all__ = ["IMMUTABLE", "LatestCheckpoint", "MembershipIndexes", "MirrorServer"]

_log = logging.getLogger(__name__)

#: ``(tree size, signed note)`` of the latest sealed checkpoint, or None before the first.
LatestCheckpoint = Callable[[], tuple[int, str] | None]
#: The leaf indexes of the MEMBERSHIP entries the node has accepted, in log order.
MembershipIndexes = Callable[[], Sequence[int]]

IMMUTABLE = "public, max-age=31536000, immutable"
#: A partial tile's bytes never change either, but the file goes once the tile grows.
_PARTIAL = "public, max-age=3600"
_CHECKPOINT = "no-cache"
_OCTETS = "application/octet-stream"
_TEXT = "text/plain; charset=utf-8"
#: Gzipped bodies of full tiles kept in memory (compressing 8 KiB costs ~100 µs).
_GZIP_CACHE_BYTES = 16 * 1024 * 1024
_LONGEST_PATH = 96
_EXPECTED = "expected /checkpoint, /membership, /tile/<L>/<N>[.p/<W>] or /tile/entries/<N>[.p/<W>]"


class _GzipCache:
    """Gzipped bodies by ETag, least recently used evicted first."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, etag: str, body: bytes) -> bytes:
        with self._lock:
            found = self._items.get(etag)
            if found is not None:
                self._items.move_to_end(etag)
                return found
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        with self._lock:
            if etag not in self._items:
                self._items[etag] = packed
                self._bytes += len(packed)
            while self._bytes > self._max and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)
        return packed


def _wants_gzip(header: str | None) -> bool:
    """True if an ``Accept-Encoding`` header accepts gzip (and does not refuse it with q=0)."""
    if not header:
        return False
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "x-gzip", "*"):
            quality = params.strip().lower()
            return quality not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "swiftchain-mirror"
    sys_version = ""
    # Headers and body leave in one write (http.server flushes after each request), and with
    # TCP_NODELAY: on a kept-alive connection two small writes otherwise wait for the client's
    # delayed ACK, 40 ms a request.
    wbufsize = 1 << 16

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("mirror %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self._plain(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{self.command} is not allowed: this mirror is read-only (GET, HEAD)\n",
            {"Allow": "GET, HEAD"},
        )

    def do_POST(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_OPTIONS(self) -> None:
        self._not_allowed()

    def _plain(
        self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = message.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", _TEXT)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        # The request line's own path: http.server folds a leading "//" into "/".
        words = self.requestline.split()
        found = self.server.lookup(words[1] if len(words) == 3 else "")
        if isinstance(found, str):
            self._plain(HTTPStatus.NOT_FOUND, found)
            return
        body, content_type, cache_control = found
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        encoding = None
        if _wants_gzip(self.headers.get("Accept-Encoding")):
            etag = etag[:-1] + '-gz"'
            body = self.server.gzipped(etag, body)
            encoding = "gzip"
        if etag in (self.headers.get("If-None-Match") or "").replace(" ", "").split(","):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Cache-Control", cache_control)
            self.send_header("Vary", "Accept-Encoding")
            self.end_headers()
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Cache-Control", cache_control)
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Access-Control-Allow-Origin", "*")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # http.server's default backlog of 5 made the sixth of clients connecting at once wait for
    # the kernel's SYN retry (a second); a mirror is meant to be read by many at once.
    request_queue_size = 128
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        tiles: TileStore,
        latest: LatestCheckpoint,
        membership: MembershipIndexes,
    ) -> None:
        self.tiles = tiles
        self.latest = latest
        self.membership = membership
        self._gzip = _GzipCache(_GZIP_CACHE_BYTES)
        super().__init__(address, _Handler)

    def gzipped(self, etag: str, body: bytes) -> bytes:
        return self._gzip.get(etag, body)

    def lookup(self, raw_path: str) -> tuple[bytes, str, str] | str:
        """``(body, content type, cache control)`` for a request path, or why it is 404."""
        if len(raw_path) > _LONGEST_PATH or not raw_path.startswith("/"):
            return f"not found: {_EXPECTED}\n"
        path = raw_path[1:]
        latest = self.latest()
        if path == "checkpoint":
            if latest is None:
                return "not found: no checkpoint has been sealed yet\n"
            return latest[1].encode("utf-8"), _TEXT, _CHECKPOINT
        size = 0 if latest is None else latest[0]
        if path == "membership":
            below = "".join(f"{i}\n" for i in list(self.membership()) if i < size)
            return below.encode("ascii"), _TEXT, _CHECKPOINT
        try:
            if path.startswith("tile/entries/"):
                level, (index, width) = ENTRIES, parse_entries_path(path)
            else:
                tile = parse_tile_path(path)
                level, index, width = tile.level, tile.index, tile.width
        except InvalidInputError:
            return f"not found: {raw_path!r} is not a tlog-tiles path ({_EXPECTED})\n"
        if width > tile_width(max(level, 0), index, size):
            return f"not found: {raw_path} is not in the log as of the latest sealed checkpoint\n"
        if level == ENTRIES:
            body = self.tiles.read_bundle_bytes(index, width)
        else:
            body = self.tiles.read_tile(level, index, width)
        if body is None:
            _log.warning("mirror: %s is sealed but not found in the data directory", raw_path)
            return f"not found: {raw_path} is not stored on this node\n"
        return body, _OCTETS, IMMUTABLE if width == TILE_WIDTH else _PARTIAL


class MirrorServer:
    """Serves ``tiles`` (up to the size of ``latest()``) on ``host:port`` (0: any free port),
    and the leaf indexes ``membership()`` of the MEMBERSHIP entries below that size."""

    def __init__(
        self,
        host: str,
        port: int,
        tiles: TileStore,
        latest: LatestCheckpoint,
        membership: MembershipIndexes = tuple,
    ) -> None:
        self._server = _Server((host, port), tiles, latest, membership)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> MirrorServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mirror", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
