"""Published RFC 6962/9162 test vectors (see tests/data/merkle/README.md for their sources).

* the certificate-transparency 8-leaf reference tree: roots of every prefix, inclusion and
  consistency proofs, hasher vectors: our builder must produce exactly these proofs;
* transparency-dev/merkle's JSON probes (happy paths and expected failures), verified as
  published, plus every other probe regenerated with a port of its ``cmd/proofgen`` rules,
  the port itself checked against the copied probes;
* real Certificate Transparency responses (Google Argon 2020, from golang.org/x/mod/sumdb/tlog).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chain.errors import InvalidInputError, VerificationError
from chain.hashing import EMPTY_ROOT, leaf_hash, node_hash
from chain.proof_build import consistency_proof, inclusion_proof, tree_root
from chain.proof_verify import root_from_inclusion_proof, verify_consistency, verify_inclusion
from chain.reference import ReferenceTree
from chain.tiles import MemoryHashStore

DATA = Path(__file__).resolve().parents[2] / "data" / "merkle"
REF = json.loads((DATA / "rfc6962-reference.json").read_text())
LEAVES = [bytes.fromhex(x) for x in REF["leaves"]]
ROOTS = [bytes.fromhex(x) for x in REF["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
UINT64 = 1 << 64

# Upstream probes that expect success where our verifier is deliberately stricter.
STRICTER = {
    # Two equal 12-byte "roots": we reject any hash that is not 32 bytes.
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": InvalidInputError,
}


def _store(entries: list[bytes]) -> MemoryHashStore:
    store = MemoryHashStore()
    store.extend(leaf_hash(e) for e in entries)
    return store


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


# ------------------------------------------------------------------ the RFC 6962 reference tree


def test_hasher_vectors() -> None:
    h = REF["hasher"]
    assert EMPTY_ROOT.hex() == h["empty_root"]
    assert leaf_hash(b"").hex() == h["leaf_hash_empty"]
    assert leaf_hash(b"L123456").hex() == h["leaf_hash_L123456"]
    assert node_hash(b"N123", b"N456").hex() == h["node_hash_N123_N456"]


def test_reference_roots() -> None:
    store = MemoryHashStore()
    for i, leaf in enumerate(LEAVES):
        store.append_leaf(leaf_hash(leaf))
        assert store.root() == ROOTS[i]
    for n in range(1, len(LEAVES) + 1):
        assert tree_root(n, store) == ROOTS[n - 1]
        assert ReferenceTree(LEAVES).mth(0, n) == ROOTS[n - 1]


@pytest.mark.parametrize("vector", REF["inclusion"], ids=lambda v: f"{v['index']}-of-{v['size']}")
def test_reference_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["size"]
    want = [bytes.fromhex(x) for x in vector["proof"]]
    assert inclusion_proof(index, size, _store(LEAVES)) == want
    assert ReferenceTree(LEAVES).path(index, 0, size) == want
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, want, ROOTS[size - 1])
    assert root_from_inclusion_proof(leaf_hash(LEAVES[index]), index, size, want) == ROOTS[size - 1]


@pytest.mark.parametrize(
    "vector", REF["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}"
)
def test_reference_consistency_proofs(vector: dict[str, Any]) -> None:
    size1, size2 = vector["size1"], vector["size2"]
    want = [bytes.fromhex(x) for x in vector["proof"]]
    assert consistency_proof(size1, size2, _store(LEAVES)) == want
    if size1 < size2:
        assert ReferenceTree(LEAVES).proof(size1, size2) == want
    verify_consistency(size1, size2, want, ROOTS[size1 - 1], ROOTS[size2 - 1])


# ------------------------------------------------------------- transparency-dev JSON probes


@dataclass(frozen=True)
class InclusionProbe:
    index: int
    size: int
    root: bytes
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    want_err: bool

    @classmethod
    def load(cls, raw: dict[str, Any]) -> InclusionProbe:
        index = raw["leafIdx"] if "leafIdx" in raw else raw["leafIndex"]  # older files
        return cls(
            index,
            raw["treeSize"],
            _b64(raw["root"]),
            _b64(raw["leafHash"]),
            tuple(_b64(p) for p in raw["proof"] or []),
            raw["wantErr"],
        )

    def verify(self) -> None:
        verify_inclusion(self.leaf_hash, self.index, self.size, list(self.proof), self.root)


@dataclass(frozen=True)
class ConsistencyProbe:
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: tuple[bytes, ...]
    want_err: bool

    @classmethod
    def load(cls, raw: dict[str, Any]) -> ConsistencyProbe:
        return cls(
            raw["size1"],
            raw["size2"],
            _b64(raw["root1"]),
            _b64(raw["root2"]),
            tuple(_b64(p) for p in raw["proof"] or []),
            raw["wantErr"],
        )

    def verify(self) -> None:
        verify_consistency(self.size1, self.size2, list(self.proof), self.root1, self.root2)


def _probe_files(kind: str) -> list[Path]:
    files = sorted((DATA / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {DATA}"
    return files


def _rel(path: Path) -> str:
    return path.relative_to(DATA).as_posix()


def _check(probe: InclusionProbe | ConsistencyProbe, name: str) -> None:
    if name in STRICTER:
        with pytest.raises(STRICTER[name]):
            probe.verify()
    elif probe.want_err:
        with pytest.raises((InvalidInputError, VerificationError)):
            probe.verify()
    else:
        probe.verify()


@pytest.mark.parametrize("path", _probe_files("inclusion"), ids=_rel)
def test_upstream_inclusion_probe(path: Path) -> None:
    _check(InclusionProbe.load(json.loads(path.read_text())), _rel(path))


@pytest.mark.parametrize("path", _probe_files("consistency"), ids=_rel)
def test_upstream_consistency_probe(path: Path) -> None:
    _check(ConsistencyProbe.load(json.loads(path.read_text())), _rel(path))


def test_upstream_happy_paths_are_what_we_build() -> None:
    store = _store(LEAVES)
    for path in _probe_files("inclusion"):
        p = InclusionProbe.load(json.loads(path.read_text()))
        if path.name == "happy-path.json":
            assert list(p.proof) == inclusion_proof(p.index, p.size, store), _rel(path)
            assert p.leaf_hash == leaf_hash(LEAVES[p.index])
            assert p.root == ROOTS[p.size - 1]
    for path in _probe_files("consistency"):
        c = ConsistencyProbe.load(json.loads(path.read_text()))
        if path.name == "happy-path.json":
            assert list(c.proof) == consistency_proof(c.size1, c.size2, store), _rel(path)
    single = InclusionProbe.load(
        json.loads((DATA / "inclusion/single-entry/matching-root-and-leaf.json").read_text())
    )
    one = _store([b"data"])
    assert single.root == one.root() == leaf_hash(b"data")
    assert inclusion_proof(0, 1, one) == []


# Port of transparency-dev/merkle cmd/proofgen: the mutations it writes next to each happy path.


def _flip_first_byte(proof: tuple[bytes, ...], i: int, mask: int) -> tuple[bytes, ...]:
    h = bytearray(proof[i])
    h[0] ^= mask
    return (*proof[:i], bytes(h), *proof[i + 1 :])


def _inclusion_mutations(p: InclusionProbe) -> list[InclusionProbe]:
    root, lh, proof, i, n = p.root, p.leaf_hash, p.proof, p.index, p.size

    def probe(
        index: int = i,
        size: int = n,
        r: bytes = root,
        leaf: bytes = lh,
        pr: tuple[bytes, ...] = proof,
    ) -> InclusionProbe:
        return InclusionProbe(index, size, r, leaf, pr, True)

    out = [
        probe(index=(i - 1) % UINT64),  # uint64 arithmetic, as in Go
        probe(index=i + 1),
        probe(index=i ^ 2),
        probe(size=n * 2),
        probe(size=n // 2),
        probe(leaf=b"WrongLeaf"),
        probe(r=EMPTY_ROOT),
        probe(r=SOME_HASH),
        probe(pr=(*proof, b"")),
        probe(pr=(*proof, root)),
        probe(pr=(b"", *proof)),
        probe(pr=(root, *proof)),
    ]
    out += [probe(pr=_flip_first_byte(proof, k, 8)) for k in range(len(proof))]
    if proof:
        out.append(probe(pr=proof[:-1]))
    if len(proof) > 1:
        out.append(probe(pr=(proof[0], SOME_HASH, *proof[1:])))
    return out


def _consistency_mutations(c: ConsistencyProbe) -> list[ConsistencyProbe]:
    s1, s2, r1, r2, proof = c.size1, c.size2, c.root1, c.root2, c.proof
    if not proof:
        return []

    def probe(
        a: int = s1, b: int = s2, x: bytes = r1, y: bytes = r2, pr: tuple[bytes, ...] = proof
    ) -> ConsistencyProbe:
        return ConsistencyProbe(a, b, x, y, pr, True)

    out = [
        probe(a=(s1 - 1) % UINT64),
        probe(a=s1 + 1),
        probe(a=s1 ^ 2),
        probe(b=s2 * 2),
        probe(b=s2 // 2),
        probe(x=b"WrongRoot"),
        probe(y=b"WrongRoot"),
        probe(x=r2, y=r1),
        probe(pr=()),
        probe(pr=(*proof, b"")),
        probe(pr=(*proof, r1)),
        probe(pr=(*proof, r2)),
        probe(pr=(b"", *proof)),
        probe(pr=(r1, *proof)),
        probe(pr=(r2, *proof)),
        probe(pr=(proof[0], *proof)),
        probe(pr=proof[:-1]),
    ]
    out += [probe(pr=_flip_first_byte(proof, k, 16)) for k in range(len(proof))]
    return out


def _happy(kind: str) -> dict[str, Any]:
    out = {}
    for path in _probe_files(kind):
        if path.name == "happy-path.json":
            out[path.parent.name] = json.loads(path.read_text())
    assert sorted(out) == ["0", "1", "2", "3", "4"]
    return out


def test_proofgen_port_reproduces_the_copied_probes() -> None:
    """Every copied mutation probe is one our port generates (so the port is faithful)."""
    checked = 0
    for name, raw in _happy("inclusion").items():
        generated = set(_inclusion_mutations(InclusionProbe.load(raw)))
        for path in (DATA / "inclusion" / name).glob("*.json"):
            probe = InclusionProbe.load(json.loads(path.read_text()))
            if path.name != "happy-path.json":
                assert probe in generated, _rel(path)
                checked += 1
    for name, raw in _happy("consistency").items():
        generated_c = set(_consistency_mutations(ConsistencyProbe.load(raw)))
        for path in (DATA / "consistency" / name).glob("*.json"):
            cprobe = ConsistencyProbe.load(json.loads(path.read_text()))
            if path.name != "happy-path.json":
                assert cprobe in generated_c, _rel(path)
                checked += 1
    assert checked >= 30


def test_every_regenerated_upstream_probe_fails() -> None:
    count = 0
    for raw in _happy("inclusion").values():
        for probe in _inclusion_mutations(InclusionProbe.load(raw)):
            with pytest.raises((InvalidInputError, VerificationError)):
                probe.verify()
            count += 1
    for raw in _happy("consistency").values():
        for cprobe in _consistency_mutations(ConsistencyProbe.load(raw)):
            with pytest.raises((InvalidInputError, VerificationError)):
                cprobe.verify()
            count += 1
    assert count > 130


# ------------------------------------------------------------------ real CT log responses


def test_certificate_transparency_argon2020() -> None:
    """Proofs served by a production RFC 6962 log verify (tlog's TestCertificateTransparency)."""
    d = DATA / "tlog-argon2020"
    sth = json.loads((d / "sth.json").read_text())
    size, root = sth["tree_size"], _b64(sth["sha256_root_hash"])
    entry = _b64(json.loads((d / "entries.json").read_text())["entries"][0]["leaf_input"])
    raw_proof = json.loads((d / "proof.json").read_text())
    proof = [_b64(h) for h in raw_proof["audit_path"]]
    index = raw_proof["leaf_index"]
    assert index == 10000
    verify_inclusion(leaf_hash(entry), index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(entry + b"\x00"), index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaf_hash(entry), index + 1, size, proof, root)

    cons = [_b64(h) for h in json.loads((d / "consistency.json").read_text())["consistency"]]
    old_root = _b64("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=")
    verify_consistency(3654490, size, cons, old_root, root)
    with pytest.raises(VerificationError):
        verify_consistency(3654490, size, cons, root, root)
    with pytest.raises(VerificationError):
        verify_consistency(3654491, size, cons, old_root, root)
