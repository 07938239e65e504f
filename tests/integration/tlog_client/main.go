// Command tlog_client reads a Swiftchain node's public mirror as any C2SP tlog-tiles client
// would: it fetches /checkpoint, checks the signed note with golang.org/x/mod/sumdb/note against
// the member verifier keys given, reads hash tiles through tlog.TileHashReader (which checks
// every tile against the checkpoint's root), recomputes the root, proves and checks records
// with tlog.ProveRecord and tlog.CheckRecord, and checks that the entry bundles hash to the
// leaves. It prints "ok size=<N> root=<base64>" and exits 0, or prints why and exits 1.
//
// Usage: tlog_client URL QUORUM VERIFIER_KEY...
package main

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var client = &http.Client{Timeout: 20 * time.Second}

func get(base, path string) ([]byte, error) {
	resp, err := client.Get(base + "/" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// c2spPath is the C2SP tlog-tiles path of a tile: tlog's sumdb path without the height.
func c2spPath(t tlog.Tile) string {
	return strings.Replace(t.Path(), fmt.Sprintf("tile/%d/", t.H), "tile/", 1)
}

// tiles fetches tiles from the mirror (tlog.TileReader).
type tiles struct{ base string }

func (tiles) Height() int { return 8 }

func (r tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, t := range ts {
		data, err := get(r.base, c2spPath(t))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: tlog_client URL QUORUM VERIFIER_KEY...")
	}
	base := strings.TrimRight(os.Args[1], "/")
	quorum, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fail("quorum: %v", err)
	}
	var verifiers []note.Verifier
	for _, vkey := range os.Args[3:] {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			fail("verifier key: %v", err)
		}
		verifiers = append(verifiers, v)
	}
	raw, err := get(base, "checkpoint")
	if err != nil {
		fail("%v", err)
	}
	n, err := note.Open(raw, note.VerifierList(verifiers...))
	if err != nil {
		fail("checkpoint note: %v", err)
	}
	signers := map[string]bool{}
	for _, s := range n.Sigs {
		signers[s.Name] = true
	}
	if len(signers) < quorum {
		fail("checkpoint signed by %d members, quorum %d", len(signers), quorum)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		fail("checkpoint text: %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("checkpoint root: %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := tlog.TileHashReader(tree, tiles{base})
	got, err := tlog.TreeHash(size, reader)
	if err != nil {
		fail("tree hash from tiles: %v", err)
	}
	if got != root {
		fail("tiles give root %s, checkpoint says %s", got, root)
	}
	// every entry: its bundle's bytes hash to the leaf; a few of them proved and checked
	for bundle := int64(0); bundle*256 < size; bundle++ {
		width := size - bundle*256
		if width > 256 {
			width = 256
		}
		// an entry bundle sits where level 0's tile would, under tile/entries/
		tile := tlog.Tile{H: 8, L: 0, N: bundle, W: int(width)}
		path := strings.Replace(c2spPath(tile), "tile/0/", "tile/entries/", 1)
		data, err := get(base, path)
		if err != nil {
			fail("%v", err)
		}
		for i := int64(0); i < width; i++ {
			if len(data) < 2 {
				fail("%s: ends before entry %d", path, i)
			}
			length := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+length {
				fail("%s: entry %d cut short", path, i)
			}
			entry := data[2 : 2+length]
			data = data[2+length:]
			leaf := bundle*256 + i
			hashes, err := reader.ReadHashes([]int64{tlog.StoredHashIndex(0, leaf)})
			if err != nil {
				fail("leaf %d: %v", leaf, err)
			}
			if tlog.RecordHash(entry) != hashes[0] {
				fail("leaf %d: the entry bundle does not hash to the leaf", leaf)
			}
			if leaf%97 == 0 || leaf == size-1 {
				proof, err := tlog.ProveRecord(size, leaf, reader)
				if err != nil {
					fail("prove leaf %d: %v", leaf, err)
				}
				if err := tlog.CheckRecord(proof, size, root, leaf, hashes[0]); err != nil {
					fail("check leaf %d: %v", leaf, err)
				}
			}
		}
		if len(data) != 0 {
			fail("%s: %d bytes after %d entries", path, len(data), width)
		}
	}
	fmt.Printf("ok size=%d root=%s signers=%d\n", size, base64.StdEncoding.EncodeToString(root[:]), len(signers))
}
