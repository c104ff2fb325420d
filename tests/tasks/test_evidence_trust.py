"""Evidence nobody can forge: records signed by the tool's key count, anything else written into the notes ref
does not. Forged notes are pushed to a real bare origin with plain git, as an attacker with push access would."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rules.signatures import EvidencePolicy, SigningKeyError, Trust, load_private_key, load_public_key, sign
from tasks import evidence
from tasks.evidence import Record
from tasks.gitrepo import GitRepository
from tests.support.gitserver import make_origin, run_git

COMMIT_FILES = {"README.md": "hello\n"}


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_line(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def openssh_private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def approved(commit: str, by: str = "alice", tag: str = "v1.0.1-rc1") -> Record:
    return Record("approved", "shop", "production", tag, commit, run="r1", by=by, reason="ok")


# --- signatures ---------------------------------------------------------------------------------------------


def test_a_signed_record_counts_and_any_change_to_it_does_not() -> None:
    key = new_key()
    trust = Trust.from_lines([public_line(key)])
    fields = asdict(approved("a" * 40))
    fields["sig"] = sign(fields, key)
    assert trust.signed_by(fields) is not None
    for field, value in [("by", "mallory"), ("commit", "b" * 40), ("tag", "v9.9.9-rc1"), ("details", {"x": 1})]:
        assert not trust.counts({**fields, field: value}), field


def test_unsigned_foreign_and_malformed_signatures_do_not_count() -> None:
    key, other = new_key(), new_key()
    trust = Trust.from_lines([public_line(key)])
    fields = asdict(approved("a" * 40))
    assert not trust.counts(fields)  # unsigned
    assert not trust.counts({**fields, "sig": sign(fields, other)})  # a key the pipeline does not trust
    for bad in ("ed25519:", "ed25519:zz:!!", "rsa:x:y", "ed25519:" + "a" * 300, 42):
        assert not trust.counts({**fields, "sig": bad})
    assert Trust().counts(fields)  # no trusted keys configured: every record counts (as before)


def test_key_loading_refuses_what_is_not_an_ed25519_key_and_never_echoes_it() -> None:
    key = new_key()
    assert load_private_key(openssh_private(key)).public_key() == key.public_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert load_private_key(pem).public_key() == key.public_key()
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END OPENSSH PRIVATE KEY-----"
    with pytest.raises(SigningKeyError) as caught:
        load_private_key(secret)
    assert "c2VjcmV0" not in str(caught.value)
    with pytest.raises(SigningKeyError, match="ssh-ed25519"):
        load_public_key("ssh-rsa AAAAB3NzaC1yc2E= x")
    with pytest.raises(SigningKeyError):
        load_public_key("ssh-ed25519 not-base64")
    assert repr(EvidencePolicy(signer=key)) == "EvidencePolicy(trusted=0, signing=yes)"


# --- the store, against a real origin -----------------------------------------------------------------------


@pytest.fixture
def origin(tmp_path: Path) -> tuple[Path, Path, str]:
    origin, seed = make_origin(tmp_path, COMMIT_FILES)
    return origin, seed, run_git(seed, "rev-parse", "HEAD")


def forge(seed: Path, commit: str, note: str) -> None:
    """Mallory writes the note with plain git and pushes the notes ref."""
    if run_git(seed, "ls-remote", "origin", "refs/notes/promote"):
        run_git(seed, "fetch", "--quiet", "origin", "+refs/notes/promote:refs/notes/promote")
    run_git(seed, "notes", "--ref=promote", "add", "--force", "-m", note, commit)
    run_git(seed, "push", "--quiet", "--force", "origin", "refs/notes/promote:refs/notes/promote")


def forged_note(*records: Record) -> str:
    return json.dumps({"schema": 1, "records": [asdict(r) for r in records]})


def repository(origin: Path, cache: Path, policy: EvidencePolicy | None) -> GitRepository:
    repo = GitRepository(str(origin), cache, evidence_policy=policy)
    repo.fetch()
    return repo


def test_forged_records_on_the_notes_ref_do_not_count_when_keys_are_trusted(
    origin: tuple[Path, Path, str], tmp_path: Path
) -> None:
    bare, seed, commit = origin
    tool_key = new_key()
    policy = EvidencePolicy(trust=Trust.from_lines([public_line(tool_key)]), signer=tool_key)
    forge(seed, commit, forged_note(approved(commit, by="mallory"), approved(commit, tag="v1.0.2-rc1")))
    repo = repository(bare, tmp_path / "cache", policy)
    # The forged approval of today's rc and the pre-approval of a future one are both ignored ...
    assert evidence.find_record(repo, "approved", "shop", "production", "v1.0.1-rc1") is None
    assert evidence.find_record(repo, "approved", "shop", "production", "v1.0.2-rc1") is None
    assert evidence.all_records(repo) == []
    ignored = evidence.ignored_records(repo)
    assert [(i.commit, i.reason, i.record and i.record.by) for i in ignored] == [
        (commit, "unsigned", "mallory"),
        (commit, "unsigned", "alice"),
    ]
    # ... and do not keep the tool's own (signed) record of the same fact out.
    evidence.record(repo, approved(commit, by="alice"))
    found = evidence.find_record(repo, "approved", "shop", "production", "v1.0.1-rc1")
    assert found is not None and found.by == "alice" and found.sig.startswith("ed25519:")
    # Another reader, with only the public key, trusts the same record.
    reader = repository(bare, tmp_path / "reader", EvidencePolicy(trust=policy.trust))
    assert evidence.find_record(reader, "approved", "shop", "production", "v1.0.1-rc1") == found


def test_a_record_signed_with_another_key_or_altered_after_signing_does_not_count(
    origin: tuple[Path, Path, str], tmp_path: Path
) -> None:
    bare, seed, commit = origin
    tool_key, mallory_key = new_key(), new_key()
    trust = Trust.from_lines([public_line(tool_key)])
    signed = approved(commit)
    signed = replace(signed, sig=sign(asdict(signed), tool_key))
    altered = replace(signed, by="mallory")
    own = approved(commit, by="mallory", tag="v1.0.2-rc1")
    own = replace(own, sig=sign(asdict(own), mallory_key))
    forge(seed, commit, forged_note(signed, altered, own))
    repo = repository(bare, tmp_path / "cache", EvidencePolicy(trust=trust))
    assert evidence.all_records(repo) == [signed]
    reasons = {i.record.by if i.record else "": i.reason for i in evidence.ignored_records(repo)}
    assert reasons == {"mallory": "not signed by a trusted key (or altered after signing)"}


def test_a_note_that_is_not_ours_stops_no_reader_and_a_write_keeps_it(
    origin: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """Another tool's note, broken JSON or wrong field types on one commit: every reader goes on with the
    records it can read, and the tool's write to that commit keeps the foreign text."""
    bare, seed, commit = origin
    for note in ["not json at all", '{"schema": 1, "records": [{"kind": 3}]}', '{"owner": "other-tool", "x": [1]}']:
        forge(seed, commit, note)
        repo = repository(bare, tmp_path / f"cache-{len(note)}", None)
        assert evidence.all_records(repo) == []
        assert evidence.find_record(repo, "approved", "shop", "production", "v1.0.1-rc1") is None
        assert "not in this tool's format" in evidence.ignored_records(repo)[0].reason
        evidence.record(repo, approved(commit))
        evidence.record(repo, approved(commit, tag="v1.0.2-rc1"))  # a second write keeps it once, flat
        written = json.loads(run_git(bare, "notes", "--ref=promote", "show", commit))
        assert [r["tag"] for r in written["records"]] == ["v1.0.1-rc1", "v1.0.2-rc1"]
        kept = written["kept"]
        assert kept == [note] or kept == [{"kind": 3}], kept


def test_a_non_utf8_note_is_read_as_foreign(origin: tuple[Path, Path, str], tmp_path: Path) -> None:
    bare, seed, commit = origin
    blob_file = tmp_path / "note.bin"
    blob_file.write_bytes(b"\xff\xfe not utf-8 \x80")
    run_git(seed, "notes", "--ref=promote", "add", "--force", "-F", str(blob_file), commit)
    run_git(seed, "push", "--quiet", "--force", "origin", "refs/notes/promote:refs/notes/promote")
    repo = repository(bare, tmp_path / "cache", None)
    assert evidence.all_records(repo) == []
    assert evidence.records_for(repo, commit) == []
    assert len(evidence.ignored_records(repo)) == 1


def test_a_note_larger_than_an_argument_list_is_written(origin: tuple[Path, Path, str], tmp_path: Path) -> None:
    """The note goes to git from a file: 200 KiB of records once failed with "Argument list too long" (and the
    whole note was visible in the process list)."""
    bare, _, commit = origin
    repo = repository(bare, tmp_path / "cache", None)
    big = replace(approved(commit), details={"log": "x" * 200_000})
    evidence.record(repo, big)
    evidence.record(repo, approved(commit, tag="v1.0.2-rc1"))
    assert len(evidence.records_for(repo, commit)) == 2


def test_a_record_dated_in_the_future_does_not_count(origin: tuple[Path, Path, str], tmp_path: Path) -> None:
    """Was: a record dated 2999 stayed the newest, rewriting the board and the order of verifications."""
    bare, seed, commit = origin
    future = replace(approved(commit), at="2999-01-01T00:00:00+00:00")
    garbled = replace(approved(commit, tag="v1.0.3-rc1"), at="soon")
    forge(seed, commit, forged_note(future, garbled, approved(commit, tag="v1.0.2-rc1")))
    repo = repository(bare, tmp_path / "cache", None)
    assert [r.tag for r in evidence.all_records(repo)] == ["v1.0.2-rc1"]
    assert evidence.find_record(repo, "approved", "shop", "production", "v1.0.1-rc1") is None
    assert {i.reason for i in evidence.ignored_records(repo)} == {"dated in the future (or with an unreadable time)"}
