"""A local, strict Hugging Face Hub-compatible HTTP server for end-to-end tests.

The real ``huggingface_hub`` client talks to it through ``HF_ENDPOINT`` (see ``/work/shared/HUB_PROTOCOL.md``
for the wire format). It keeps real revisions: every commit has an id (sha1 of the commit's content), branches
point at commits, and every commit holds its own file tree. LFS uploads are checked against their sha256.
Errors carry the ``X-Error-Code`` header the client maps to its exception classes. Only loopback, bounded
bodies, no unbounded loops. :class:`FaultPlan` injects 5xx bursts, dropped uploads and 409s.

The ``hub_server`` pytest fixture starts one server per test and points the client at it.
"""

from __future__ import annotations

import base64
from binascii import Error as binascii_error
import collections
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".onnx", ".msgpack", ".gguf", ".npz")
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
MAX_JSON_BODY = 16 * 1024 * 1024
MAX_UPLOAD_BODY = 256 * 1024 * 1024
MAX_PREUPLOAD_FILES = 256
ALLOWED_RELATIONS = ("adapter", "merge", "quantized", "finetune")
TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_FRONT_MATTER_RE = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_front_matter(text: str) -> dict | None:
    """The README's YAML metadata block as a dict, {} if there is none, None if it is not valid YAML/dict."""
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    if data is None:
        return {}
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    blob_id: str  # git blob id (of the content, or of the LFS pointer)
    sha256: str | None  # set for LFS files
    content: bytes = field(repr=False)

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict  # path -> FileEntry


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict = field(default_factory=dict)  # name -> commit id
    tags: dict = field(default_factory=dict)
    commits: dict = field(default_factory=dict)  # id -> Commit
    lfs: dict = field(default_factory=dict)  # sha256 -> bytes
    upload_secrets: dict = field(default_factory=dict)  # sha256 -> secret of the pending upload URL

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, rev: str) -> Commit | None:
        cid = self.branches.get(rev) or self.tags.get(rev)
        if cid is None and rev in self.commits:
            cid = rev
        return self.commits.get(cid) if cid else None

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits reachable from ``branch``, newest first."""
        out, cid = [], self.branches.get(branch)
        for _ in range(len(self.commits)):
            if cid is None:
                break
            commit = self.commits[cid]
            out.append(commit)
            cid = commit.parent
        return out


class FaultPlan:
    """Faults the tests inject. Each rule fires a bounded number of times, then is spent."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules: list[dict] = []

    def fail(self, method: str, pattern: str, *, status: int = 500, times: int = 1, message: str = "injected fault"):
        """Answer the next ``times`` requests whose ``"METHOD /path"`` matches regex ``pattern`` with ``status``."""
        with self._lock:
            self._rules.append({"kind": "status", "method": method.upper(), "pattern": re.compile(pattern),
                                "status": status, "left": times, "message": message})

    def drop_upload(self, *, times: int = 1, after_bytes: int = 1024):
        """Close the socket after reading ``after_bytes`` of the body of the next ``times`` LFS uploads."""
        with self._lock:
            self._rules.append({"kind": "drop", "method": "PUT", "pattern": re.compile(r"^/_lfs/upload/"),
                                "after": after_bytes, "left": times})

    def conflict_on_create(self, *, times: int = 1):
        """Answer the next ``times`` create_repo calls with 409 (as if the repo existed)."""
        self.fail("POST", r"^/api/repos/create$", status=409, times=times, message="You already created this repo")
        with self._lock:
            self._rules[-1]["with_url"] = True  # the real Hub's 409 carries the repo URL, which the client reads

    def clear(self):
        with self._lock:
            self._rules.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(r["left"] for r in self._rules)

    def take(self, method: str, path: str) -> dict | None:
        with self._lock:
            for rule in self._rules:
                if rule["left"] > 0 and rule["method"] == method and rule["pattern"].search(path):
                    rule["left"] -= 1
                    return rule
        return None


class HubState:
    """Everything the server stores; tests inspect it through the fixture."""

    def __init__(self, users: dict[str, str], orgs: dict[str, list[str]]):
        self.lock = threading.RLock()
        self.users = dict(users)  # token -> user name
        self.orgs = {k: list(v) for k, v in orgs.items()}  # org -> members
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: collections.deque = collections.deque(maxlen=20000)
        self._counter = 0

    def namespaces(self, user: str | None) -> set[str]:
        if user is None:
            return set()
        return {user} | {org for org, members in self.orgs.items() if user in members}

    def can_read(self, repo: Repo, user: str | None) -> bool:
        return not repo.private or repo.namespace in self.namespaces(user)

    def can_write(self, repo: Repo, user: str | None) -> bool:
        return repo.namespace in self.namespaces(user)

    def make_commit(self, repo: Repo, parent: Commit | None, files: dict, title: str, message: str, author: str):
        with self.lock:
            self._counter += 1
            date = _now()
            content = json.dumps({
                "tree": sorted((p, e.blob_id) for p, e in files.items()),
                "parent": parent.id if parent else None,
                "author": author, "date": date, "title": title, "message": message, "seq": self._counter,
            }, sort_keys=True).encode()
            cid = hashlib.sha1(b"commit %d\0" % len(content) + content).hexdigest()
            commit = Commit(cid, parent.id if parent else None, title, message, author, date, dict(files))
            repo.commits[cid] = commit
            return commit

    def create_repo(self, repo_type: str, repo_id: str, private: bool, author: str) -> Repo:
        repo = Repo(repo_type, repo_id, private, _now())
        attrs = FileEntry(".gitattributes", len(GITATTRIBUTES), git_blob_id(GITATTRIBUTES), None, GITATTRIBUTES)
        first = self.make_commit(repo, None, {".gitattributes": attrs}, "initial commit", "", author)
        repo.branches["main"] = first.id
        self.repos[(repo_type, repo_id)] = repo
        return repo


# --------------------------------------------------------------------------------------------------- HTTP


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def _not_found(code: str, what: str) -> _HTTPError:
    return _HTTPError(404, f"{what} not found", code)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------------

    @property
    def state(self) -> HubState:
        return self.server.state  # type: ignore[attr-defined]

    @property
    def endpoint(self) -> str:
        return self.server.endpoint  # type: ignore[attr-defined]

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.state.users.get(auth[len("Bearer "):].strip())

    def _bad_token(self) -> bool:
        auth = self.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and self._user() is None

    def _read_body(self, limit: int, stop_after: int | None = None) -> bytes:
        """Read the request body (Content-Length or chunked), refusing more than ``limit`` bytes."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            for _ in range(limit + 2):  # bounded: every chunk but the last adds >= 1 byte, total <= limit
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline(1024)
                    break
                total += size
                if total > limit:
                    raise _HTTPError(413, "request body too large")
                if stop_after is not None and total >= stop_after:
                    chunks.append(self.rfile.read(max(0, size - (total - stop_after))))
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > limit:
            raise _HTTPError(413, "request body too large")
        if stop_after is not None:
            return self.rfile.read(min(length, stop_after))
        return self.rfile.read(length)

    def _send(self, status: int, body: bytes = b"", *, ctype: str = "application/json", headers: dict | None = None,
              head: bool = False, length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self._status = status

    def _json(self, status: int, obj, headers: dict | None = None, head: bool = False):
        self._send(status, json.dumps(obj).encode(), headers=headers, head=head)

    def _error(self, err: _HTTPError, head: bool = False):
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message, **err.extra}, headers=headers, head=head)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method: str):
        self._status = None
        url = urlsplit(self.path)
        self.query = parse_qs(url.query, keep_blank_values=True)
        raw_path = url.path
        try:
            rule = self.server.faults.take(method, raw_path)  # type: ignore[attr-defined]
            if rule is not None and rule["kind"] == "drop":
                self._read_body(MAX_UPLOAD_BODY, stop_after=rule["after"])
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._status = "dropped"
                return
            limit = MAX_UPLOAD_BODY if raw_path.startswith("/_lfs/upload/") else MAX_JSON_BODY
            self.body = self._read_body(limit)
            if rule is not None:
                extra = {}
                if rule.get("with_url"):
                    payload = self._json_body()
                    ns = payload.get("organization") or self._user()
                    extra["url"] = f"{self.endpoint}/{TYPE_PREFIX[payload.get('type') or 'model']}{ns}/{payload['name']}"
                raise _HTTPError(rule["status"], rule["message"], extra=extra)
            self._route(method, raw_path)
        except _HTTPError as err:
            if err.status == 413:
                self.close_connection = True
            self._error(err, head=method == "HEAD")
        except (ValueError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError, binascii_error) as err:
            self._error(_HTTPError(400, f"bad request: {type(err).__name__}: {err}"), head=method == "HEAD")
        finally:
            self.state.requests.append((method, raw_path, self._status))

    # -- routing -----------------------------------------------------------------------------------------

    def _route(self, method: str, raw_path: str):
        parts = [unquote(p) for p in raw_path.split("/")[1:]]
        if parts[:1] == ["api"]:
            rest = parts[1:]
            simple = {
                ("GET", "whoami-v2"): self._whoami, ("POST", "repos/create"): self._create_repo,
                ("DELETE", "repos/delete"): self._delete_repo, ("POST", "validate-yaml"): self._validate_yaml,
                ("GET", "models"): lambda: self._list_repos("model"),
                ("GET", "datasets"): lambda: self._list_repos("dataset"),
            }
            handler = simple.get((method, "/".join(rest)))
            if handler is not None:
                return handler()
            if len(rest) >= 3 and rest[0] in ("models", "datasets", "spaces"):
                return self._repo_api(method, rest[0][:-1], f"{rest[1]}/{rest[2]}", rest[3:])
            raise _HTTPError(404, f"no route for {method} {raw_path}")
        if parts[:1] == ["_lfs"] and len(parts) == 6:
            return self._lfs_transfer(method, parts[1], parts[2], f"{parts[3]}/{parts[4]}", parts[5])
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}")
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(method, repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise _HTTPError(404, f"no route for {method} {raw_path}")

    # -- helpers -----------------------------------------------------------------------------------------

    def _json_body(self) -> dict:
        data = json.loads(self.body.decode() or "null")
        if not isinstance(data, dict):
            raise _HTTPError(400, "expected a JSON object")
        return data

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or not self.state.can_read(repo, user):
            raise _not_found("RepoNotFound", f"Repository {repo_id}")
        if write:
            if user is None:
                raise _HTTPError(401, "You must be authenticated to write to this repo")
            if not self.state.can_write(repo, user):
                raise _HTTPError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise _not_found("RevisionNotFound", f"Revision {rev}")
        return commit

    def _namespace_for_write(self, payload: dict) -> tuple[str, str]:
        user = self._user()
        if user is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        name, org = payload.get("name"), payload.get("organization")
        if not isinstance(name, str) or not _NAME_RE.match(name) or "--" in name or ".." in name:
            raise _HTTPError(400, f"Invalid repo name {name!r}: use [A-Za-z0-9._-], no '--' or '..', max 96 chars")
        namespace = org or user
        if namespace not in self.state.namespaces(user):
            raise _HTTPError(403, f"You don't have the rights to create a repo under {namespace!r}")
        repo_type = payload.get("type") or "model"
        if repo_type not in TYPE_PREFIX:
            raise _HTTPError(400, f"Invalid repo type {repo_type!r}")
        return repo_type, f"{namespace}/{name}"

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.endpoint}/{TYPE_PREFIX[repo.repo_type]}{repo.repo_id}"

    @staticmethod
    def _tree_item(entry: FileEntry, commit: Commit | None = None) -> dict:
        item = {"type": "file", "path": entry.path, "size": entry.size, "oid": entry.blob_id}
        if entry.sha256:
            item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(_lfs_pointer(entry.sha256,
                                                                                                 entry.size))}
        if commit is not None:
            item["lastCommit"] = {"id": commit.id, "title": commit.title, "date": commit.date}
        return item

    @staticmethod
    def _dir_item(path: str) -> dict:
        return {"type": "directory", "path": path, "oid": hashlib.sha1(f"tree {path}".encode()).hexdigest()}

    # -- user / repo management ----------------------------------------------------------------------------

    def _whoami(self):
        user = self._user()
        if user is None:
            raise _HTTPError(401, "Invalid credentials in Authorization header")
        orgs = [{"name": o, "type": "org"} for o in sorted(self.state.namespaces(user) - {user})]
        self._json(200, {"type": "user", "name": user, "fullname": user, "orgs": orgs,
                         "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}}})

    def _create_repo(self):
        payload = self._json_body()
        repo_type, repo_id = self._namespace_for_write(payload)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        with self.state.lock:
            existing = self.state.repos.get((repo_type, repo_id))
            if existing is not None:
                raise _HTTPError(409, "You already created this repo", extra={"url": self._repo_url(existing)})
            repo = self.state.create_repo(repo_type, repo_id, private, self._user())
        self._json(200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _delete_repo(self):
        payload = self._json_body()
        repo_type, repo_id = self._namespace_for_write(payload)
        with self.state.lock:
            self._repo(repo_type, repo_id, write=True)
            del self.state.repos[(repo_type, repo_id)]
        self._json(200, {})

    def _validate_yaml(self):
        payload = self._json_body()
        content = payload.get("content")
        if not isinstance(content, str):
            raise _HTTPError(400, "content must be a string")
        errors, warnings = [], []
        meta = parse_front_matter(content)
        if meta is None:
            errors.append({"message": "YAML metadata is not a valid mapping"})
        elif not meta:
            warnings.append({"message": "empty or missing yaml metadata in repo card"})
        else:
            relation = meta.get("base_model_relation")
            if relation is not None and relation not in ALLOWED_RELATIONS:
                errors.append({"message": f'"base_model_relation" must be one of {list(ALLOWED_RELATIONS)}'})
            tags = meta.get("tags")
            if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
                errors.append({"message": '"tags" must be an array of strings'})
            index = meta.get("model-index")
            if index is not None and not (isinstance(index, list) and all(
                    isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("results"), list)
                    for m in index)):
                errors.append({"message": '"model-index" must be a list of {name, results}'})
        self._json(400 if errors else 200, {"errors": errors, "warnings": warnings})

    # -- repo info / listing ---------------------------------------------------------------------------------

    def _card(self, commit: Commit) -> dict | None:
        entry = commit.files.get("README.md")
        if entry is None:
            return None
        try:
            return parse_front_matter(entry.content.decode())
        except UnicodeDecodeError:
            return None

    def _derived_tags(self, card: dict | None) -> list[str]:
        if not card:
            return []
        tags = [t for t in (card.get("tags") or []) if isinstance(t, str)]
        for key, prefix in (("library_name", ""), ("pipeline_tag", ""), ("license", "license:")):
            if isinstance(card.get(key), str):
                tags.append(prefix + card[key])
        datasets = card.get("datasets") or []
        for d in [datasets] if isinstance(datasets, str) else datasets:
            tags.append(f"dataset:{d}")
        bases = card.get("base_model") or []
        relation = card.get("base_model_relation") or "finetune"
        for b in [bases] if isinstance(bases, str) else bases:
            tags += [f"base_model:{b}", f"base_model:{relation}:{b}"]
        return list(dict.fromkeys(tags))

    def _info(self, repo: Repo, commit: Commit, *, blobs: bool, card_data: bool = True) -> dict:
        card = self._card(commit)
        info = {
            "id": repo.repo_id, "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "author": repo.namespace, "sha": commit.id, "lastModified": commit.date, "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": self._derived_tags(card),
            "library_name": (card or {}).get("library_name"), "pipeline_tag": (card or {}).get("pipeline_tag"),
        }
        if card and card_data:
            info["cardData"] = card
            if "model-index" in card:
                info["model-index"] = card["model-index"]
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sib = {"rfilename": path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.blob_id)
                if entry.sha256:
                    sib["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                                  "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sib)
        info["siblings"] = siblings
        return info

    def _list_repos(self, repo_type: str):
        q = self.query
        filters = q.get("filter", [])
        author = (q.get("author") or [None])[0]
        search = ((q.get("search") or [""])[0]).lower()
        limit = int((q.get("limit") or ["0"])[0] or 0)
        full = (q.get("full") or ["false"])[0] == "true"
        card_data = (q.get("cardData") or ["false"])[0] == "true"
        cursor = int((q.get("cursor") or ["0"])[0])
        page = self.server.page_size  # type: ignore[attr-defined]
        if limit > 0:
            page = min(page, limit)
        user = self._user()
        out = []
        with self.state.lock:
            repos = sorted((r for r in self.state.repos.values() if r.repo_type == repo_type
                            and self.state.can_read(r, user)), key=lambda r: r.created_at, reverse=True)
            for repo in repos:
                commit = repo.resolve("main")
                info = self._info(repo, commit, blobs=False, card_data=card_data)
                if author and repo.namespace != author:
                    continue
                if search and search not in repo.repo_id.lower():
                    continue
                if any(f not in info["tags"] for f in filters):
                    continue
                if not full:
                    info.pop("siblings")
                out.append(info)
        chunk = out[cursor:cursor + page]
        headers = {}
        if cursor + page < len(out):
            nxt = dict(q)
            nxt["cursor"] = [str(cursor + page)]
            qs = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, vs in nxt.items() for v in vs)
            headers["Link"] = f'<{self.endpoint}/api/{repo_type}s?{qs}>; rel="next"'
        self._json(200, chunk, headers=headers)

    def _repo_api(self, method: str, repo_type: str, repo_id: str, rest: list[str]):
        op = rest[0] if rest else ""
        with self.state.lock:
            if method == "GET" and op == "":
                repo = self._repo(repo_type, repo_id)
                return self._json(200, self._info(repo, self._commit(repo, "main"), blobs=self._flag("blobs")))
            if method == "GET" and op == "revision" and len(rest) == 2:
                repo = self._repo(repo_type, repo_id)
                return self._json(200, self._info(repo, self._commit(repo, rest[1]), blobs=self._flag("blobs")))
            if method == "POST" and op == "preupload" and len(rest) == 2:
                return self._preupload(self._repo(repo_type, repo_id, write=True), rest[1])
            if method == "POST" and op == "commit" and len(rest) == 2:
                return self._commit_endpoint(self._repo(repo_type, repo_id, write=True), rest[1])
            if method == "GET" and op == "tree" and len(rest) >= 2:
                return self._tree(self._repo(repo_type, repo_id), rest[1], "/".join(rest[2:]))
            if method == "POST" and op == "paths-info" and len(rest) == 2:
                return self._paths_info(self._repo(repo_type, repo_id), rest[1])
            if method == "GET" and op == "refs" and len(rest) == 1:
                return self._refs(self._repo(repo_type, repo_id))
            if method == "POST" and op == "branch" and len(rest) == 2:
                return self._create_branch(self._repo(repo_type, repo_id, write=True), rest[1])
            if method == "GET" and op == "commits" and len(rest) == 2:
                return self._commits(self._repo(repo_type, repo_id), rest[1])
        raise _HTTPError(404, f"no route for {method} {op}")

    def _flag(self, name: str) -> bool:
        return (self.query.get(name) or ["false"])[0] in ("true", "1", "True")

    def _tree(self, repo: Repo, rev: str, path: str):
        commit = self._commit(repo, rev)
        recursive = self._flag("recursive")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise _not_found("EntryNotFound", f"Path {path}")
        items, dirs = [], set()
        for p in sorted(commit.files):
            if not p.startswith(prefix):
                continue
            rel = p[len(prefix):].split("/")
            for i in range(1, len(rel)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(rel[:i]))
            if recursive or len(rel) == 1:
                items.append(self._tree_item(commit.files[p], commit if self._flag("expand") else None))
        self._json(200, [self._dir_item(d) for d in sorted(dirs)] + items)

    def _paths_info(self, repo: Repo, rev: str):
        commit = self._commit(repo, rev)
        form = parse_qs(self.body.decode(), keep_blank_values=True)
        out = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                out.append(self._tree_item(commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                out.append(self._dir_item(path))
        self._json(200, out)

    def _refs(self, repo: Repo):
        self._json(200, {
            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()],
            "converts": [],
            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in repo.tags.items()],
        })

    def _create_branch(self, repo: Repo, branch: str):
        payload = json.loads(self.body.decode() or "{}")
        if branch in repo.branches:
            raise _HTTPError(409, f"Reference {branch} already exists")
        if not _NAME_RE.match(branch.replace("/", "-")):
            raise _HTTPError(400, f"Invalid branch name {branch!r}")
        start = self._commit(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.id
        self._json(200, {})

    def _commits(self, repo: Repo, rev: str):
        if rev not in repo.branches:
            raise _not_found("RevisionNotFound", f"Revision {rev}")
        self._json(200, [{"id": c.id, "title": c.title, "message": c.message, "authors": [{"user": c.author}],
                          "date": c.date} for c in repo.history(rev)])

    # -- upload --------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_path(path) -> str:
        if not isinstance(path, str) or not path or path.startswith("/") or len(path) > 1000:
            raise _HTTPError(400, f"Invalid path {path!r}")
        if any(seg in ("", ".", "..") for seg in path.split("/")) or path.startswith(".git/"):
            raise _HTTPError(400, f"Invalid path {path!r}")
        return path

    def _preupload(self, repo: Repo, rev: str):
        commit = self._commit(repo, rev)
        files = self._json_body().get("files")
        if not isinstance(files, list) or len(files) > MAX_PREUPLOAD_FILES:
            raise _HTTPError(400, "files must be a list of at most 256 entries")
        out = []
        for f in files:
            path = self._check_path(f.get("path"))
            size, sample = f.get("size"), f.get("sample")
            if not isinstance(size, int) or size < 0 or not isinstance(sample, str):
                raise _HTTPError(400, f"Invalid size/sample for {path!r}")
            if len(base64.b64decode(sample, validate=True)) > 512:
                raise _HTTPError(400, f"sample of {path!r} longer than 512 bytes")
            lfs = size > LFS_SIZE_THRESHOLD or path.lower().endswith(LFS_SUFFIXES)
            mode = "lfs" if lfs else "regular"
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if lfs else (None if existing.sha256 else existing.blob_id)
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": out, "commitOid": commit.id})

    def _lfs_batch(self, repo_type: str, repo_id: str):
        if "application/vnd.git-lfs+json" not in self.headers.get("Accept", ""):
            raise _HTTPError(400, "LFS batch requires Accept: application/vnd.git-lfs+json")
        with self.state.lock:
            repo = self._repo(repo_type, repo_id, write=True)
            payload = self._json_body()
            if payload.get("operation") != "upload" or "basic" not in (payload.get("transfers") or []):
                raise _HTTPError(400, "only the 'upload' operation with the 'basic' transfer is supported")
            if payload.get("hash_algo", "sha256") != "sha256":
                raise _HTTPError(400, "only sha256 is supported")
            ref = (payload.get("ref") or {}).get("name")
            if ref is not None and repo.resolve(ref) is None:
                raise _not_found("RevisionNotFound", f"Revision {ref}")
            objects = []
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                if not isinstance(oid, str) or not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                    objects.append({"oid": str(oid), "size": int(size or 0),
                                    "error": {"code": 422, "message": "invalid oid or size"}})
                    continue
                if size > MAX_UPLOAD_BODY:
                    objects.append({"oid": oid, "size": size, "error": {"code": 413, "message": "object too large"}})
                    continue
                if oid in repo.lfs:
                    objects.append({"oid": oid, "size": size})
                    continue
                secret = repo.upload_secrets.setdefault(oid, secrets.token_hex(8))
                base = f"{self.endpoint}/_lfs/%s/{repo_type}/{repo_id}/{oid}?size={size}&sig={secret}"
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": base % "upload", "expires_in": 3600},
                    "verify": {"href": base % "verify"},
                }})
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   ctype="application/vnd.git-lfs+json")

    def _lfs_transfer(self, method: str, action: str, repo_type: str, repo_id: str, oid: str):
        with self.state.lock:
            repo = self.state.repos.get((repo_type, repo_id))
            if repo is None:
                raise _not_found("RepoNotFound", f"Repository {repo_id}")
            secret = (self.query.get("sig") or [""])[0]
            size = int((self.query.get("size") or ["-1"])[0])
            if action == "upload" and method == "PUT":
                if repo.upload_secrets.get(oid) != secret:
                    raise _HTTPError(403, "invalid or expired upload signature")
                if len(self.body) != size or hashlib.sha256(self.body).hexdigest() != oid:
                    raise _HTTPError(400, "uploaded content does not match its oid/size")
                repo.lfs[oid] = self.body
                repo.upload_secrets.pop(oid, None)
                return self._send(200, b"", headers={"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})
            if action == "verify" and method == "POST":
                if self._user() is None:
                    raise _HTTPError(401, "verify requires authentication")
                payload = self._json_body()
                data = repo.lfs.get(payload.get("oid"))
                if data is None or len(data) != payload.get("size"):
                    raise _HTTPError(404, "object not uploaded")
                return self._json(200, {"message": "ok"})
        raise _HTTPError(404, "no such LFS action")

    def _commit_endpoint(self, repo: Repo, rev: str):
        if "application/x-ndjson" not in self.headers.get("Content-Type", ""):
            raise _HTTPError(400, "commit payload must be application/x-ndjson")
        if self.query.get("create_pr"):
            raise _HTTPError(400, "pull requests are not supported by this test server")
        if rev not in repo.branches:
            raise _not_found("RevisionNotFound", f"Branch {rev}")
        lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "first line of the commit payload must be the header")
        header = lines[0]["value"]
        title = header.get("summary")
        if not isinstance(title, str) or not title:
            raise _HTTPError(400, "commit summary is required")
        parent = repo.commits[repo.branches[rev]]
        expected = header.get("parentCommit")
        if expected is not None and expected != parent.id:
            raise _HTTPError(412, f"A commit has happened since. Please refresh and try again (head is {parent.id})")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = self._check_path(value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path"))
            if key == "file":
                if value.get("encoding") != "base64":
                    raise _HTTPError(400, "only base64 file content is supported")
                data = base64.b64decode(value["content"], validate=True)
                files[path] = FileEntry(path, len(data), git_blob_id(data), None, data)
            elif key == "lfsFile":
                oid = value.get("oid")
                if value.get("algo") != "sha256" or oid not in repo.lfs:
                    raise _HTTPError(400, f"LFS object for {path!r} was not uploaded (oid {oid})")
                data = repo.lfs[oid]
                if "size" in value and value["size"] != len(data):
                    raise _HTTPError(400, f"size mismatch for {path!r}")
                files[path] = FileEntry(path, len(data), git_blob_id(_lfs_pointer(oid, len(data))), oid, data)
            elif key == "deletedFile":
                if path not in files:
                    raise _not_found("EntryNotFound", f"A file with this name doesn't exist ({path})")
                del files[path]
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise _not_found("EntryNotFound", f"A file with this name doesn't exist ({path})")
                for p in doomed:
                    del files[p]
            else:
                raise _HTTPError(400, f"unknown commit operation {key!r}")
        commit = self.state.make_commit(repo, parent, files, title, header.get("description") or "", self._user())
        repo.branches[rev] = commit.id
        self._json(200, {"commitUrl": f"{self._repo_url(repo)}/commit/{commit.id}", "commitOid": commit.id,
                         "success": True})

    # -- download ------------------------------------------------------------------------------------------------

    def _resolve(self, method: str, repo_type: str, repo_id: str, rev: str, path: str):
        with self.state.lock:
            repo = self._repo(repo_type, repo_id)
            commit = self._commit(repo, rev)
            entry = commit.files.get(path)
            if entry is None:
                raise _not_found("EntryNotFound", f"Entry {path}")
        headers = {"X-Repo-Commit": commit.id, "X-Linked-Etag": f'"{entry.etag}"', "ETag": f'"{entry.etag}"',
                   "X-Linked-Size": str(entry.size), "Accept-Ranges": "bytes"}
        data, status = entry.content, 200
        rng = self.headers.get("Range")
        if rng and method == "GET":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if match is None:
                raise _HTTPError(416, "invalid range")
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data) and len(data) > 0:
                raise _HTTPError(416, "range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start:end + 1], 206
        self._send(status, data, ctype="application/octet-stream", headers=headers, head=method == "HEAD")


# --------------------------------------------------------------------------------------------------- server


class LocalHub:
    """A running server. ``start()`` binds 127.0.0.1 on a free port; ``stop()`` shuts it down."""

    def __init__(self, *, users: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None,
                 page_size: int = 1000):
        self.token = "hf_test" + secrets.token_hex(16)
        self.other_token = "hf_other" + secrets.token_hex(16)
        users = users or {self.token: "tester", self.other_token: "someone-else"}
        self.state = HubState(users, orgs if orgs is not None else {"mixmatch-org": ["tester"]})
        self.faults = FaultPlan()
        self.page_size = page_size
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "LocalHub":
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.state, httpd.faults, httpd.page_size = self.state, self.faults, self.page_size
        self._httpd = httpd
        httpd.endpoint = self.endpoint
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    # -- inspection helpers for tests --------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.state.repos[(repo_type, repo_id)]

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        with self.state.lock:
            return sorted(rid for (t, rid) in self.state.repos if t == repo_type)

    def head(self, repo_id: str, branch: str = "main") -> str:
        return self.repo(repo_id).branches[branch]

    def commits(self, repo_id: str, branch: str = "main") -> list[str]:
        """Commit ids on ``branch``, newest first (the first one is the repo's initial commit)."""
        with self.state.lock:
            return [c.id for c in self.repo(repo_id).history(branch)]

    def files(self, repo_id: str, rev: str = "main") -> dict[str, bytes]:
        with self.state.lock:
            return {p: e.content for p, e in self.repo(repo_id).resolve(rev).files.items()}

    def entry(self, repo_id: str, path: str, rev: str = "main") -> FileEntry:
        return self.repo(repo_id).resolve(rev).files[path]

    def requests(self, method: str | None = None, pattern: str = "") -> list[tuple]:
        return [r for r in list(self.state.requests) if (method is None or r[0] == method) and re.search(pattern, r[1])]

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False, lfs_patterns=("*.bin",)):
        """Seed a repo directly (e.g. one that only holds pickle weights), as if pushed by someone else."""
        with self.state.lock:
            repo = self.state.create_repo("model", repo_id, private, repo_id.split("/")[0])
            parent = repo.resolve("main")
            tree = dict(parent.files)
            for path, data in files.items():
                if any(fnmatch.fnmatch(path, pat) for pat in lfs_patterns) or path.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    repo.lfs[sha] = data
                    tree[path] = FileEntry(path, len(data), git_blob_id(_lfs_pointer(sha, len(data))), sha, data)
                else:
                    tree[path] = FileEntry(path, len(data), git_blob_id(data), None, data)
            commit = self.state.make_commit(repo, parent, tree, "seed", "", repo_id.split("/")[0])
            repo.branches["main"] = commit.id
            return commit.id


def _patch_client(monkeypatch, endpoint: str, tmp_path):
    """Point an already-imported huggingface_hub at ``endpoint``, with fast retries and an isolated home."""
    import huggingface_hub.constants as constants
    from huggingface_hub.utils import _http

    home = tmp_path / "hf_home_hub"
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    for name, value in {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    real_sleep = time.sleep
    # The client backs off 1, 2, 4, 8 s between retries; the same number of retries, but milliseconds apart.
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=lambda s: real_sleep(min(s, 0.01) if s else 0),
                                                       time=time.time, monotonic=time.monotonic))
    _http.close_session()
    import hf_mixmatch.hub_retry

    monkeypatch.setattr(hf_mixmatch.hub_retry, "_sleep", lambda s: real_sleep(min(s, 0.01)))  # hf-mixmatch's retries


@pytest.fixture
def hub_server(monkeypatch, tmp_path):
    """A fresh local Hub per test; the real client is pointed at it with a fake token in ``HF_TOKEN``.

    Yields the :class:`LocalHub` (``.endpoint``, ``.token``, ``.other_token``, ``.faults``, ``.state`` and
    inspection helpers such as ``.commits(repo_id)`` and ``.files(repo_id)``).
    """
    from huggingface_hub.utils import _http

    hub = LocalHub().start()
    try:
        _patch_client(monkeypatch, hub.endpoint, tmp_path)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        yield hub
    finally:
        _http.close_session()
        hub.stop()
