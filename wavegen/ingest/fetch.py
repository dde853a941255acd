"""Songs from URL lists: parsing `songs.urls` and fetching each song over HTTP(S).

A URL list holds one http or https URL per line, optionally followed by the song's sha256
(64 hex characters) after whitespace; blank lines and `#` comments are ignored.

`fetch` streams one URL's body into a spooled temporary file (memory up to
`FetchConfig.spool_bytes`, disk beyond) while hashing it. It retries what may succeed on a
second try (timeouts, dropped or refused connections, truncated bodies, HTTP 5xx) with
exponential backoff, a bounded number of times, and gives up at once on what will not
(HTTP 4xx, a body over the size cap, a checksum mismatch, a URL that is not http(s)).
Every give-up is a `FetchError` whose `to_record()` is one line of a dead-letter file.

Standard library only (urllib.request / http.client): no Beam, no third-party client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, BinaryIO

USER_AGENT = "wavegen/0.1"
SCHEMES = ("http", "https")

# Why a URL gave no song. Stable names: they key failed.jsonl, the summary and metrics.
REJECTED_URL = "rejected_url"  # not a valid http(s) URL (never requested), or redirected to one
HTTP_ERROR = "http_error"  # a 4xx, a 5xx on the last attempt, or an unfollowable 3xx
TIMEOUT = "timeout"  # no byte within timeout_s, or no complete body within deadline_s
CONNECTION = "connection_error"  # refused, reset, dropped mid-response, body cut short
TOO_LARGE = "too_large"  # Content-Length or the bytes received exceed max_bytes
CHECKSUM = "checksum_mismatch"  # the body's sha256 is not the one the list gave

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # used with fullmatch


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How hard and how long to try one URL.

    The k-th retry waits min(backoff_s * 2**(k-1), max_backoff_s) before it starts: with the
    defaults 1 s, 2 s, 4 s between the 4 attempts.
    """

    timeout_s: float = 30.0  # connect timeout, and the longest wait for any single read
    deadline_s: float = 600.0  # wall-clock limit of one attempt (a trickling server)
    max_attempts: int = 4  # attempts in total, the first included
    backoff_s: float = 1.0  # wait before the 2nd attempt; doubles for each later one
    max_backoff_s: float = 30.0  # no wait is longer than this
    max_bytes: int = 5 * 10**9  # a larger body is refused (too_large)
    block_bytes: int = 1 << 20  # read size
    spool_bytes: int = 64 << 20  # bodies up to this size stay in memory; larger go to disk

    def __post_init__(self):
        positive = ("timeout_s", "deadline_s", "max_attempts", "max_bytes", "block_bytes")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"FetchConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("backoff_s", "max_backoff_s", "spool_bytes"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"FetchConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 = the second attempt)."""
        return min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)


# --------------------------------------------------------------------------------------
# URL lists


@dataclasses.dataclass(frozen=True)
class UrlEntry:
    """One song of a URL list: its URL, its sha256 if the list gave one, and its line."""

    url: str
    sha256: str | None  # lowercase hex
    line: int  # 1-based line number in the list


def _strip_comment(line: str) -> str:
    """Drops a `#` comment: one that starts the line or follows whitespace.

    A `#` inside a URL (`http://host/a.mp3#t=10`) is the URL's fragment, not a comment.
    """
    m = re.search(r"(^|\s)#", line)
    return line[:m.start()] if m else line


def _parse_line(raw: str, where: str) -> tuple[str, str | None] | None:
    """One line -> (url, sha256 or None), None for a blank or comment line."""
    fields = _strip_comment(raw).split()
    if not fields:
        return None
    if len(fields) > 2:
        raise ValueError(f"{where}: expected 'URL [SHA256]', got {len(fields)} fields "
                         f"({raw.strip()!r}); write spaces inside a URL as %20")
    if len(fields) == 2 and not _SHA256.fullmatch(fields[1]):
        raise ValueError(f"{where}: {fields[1]!r} after the URL is not a sha256 (64 hex "
                         "characters); write spaces inside a URL as %20")
    return fields[0], fields[1].lower() if len(fields) == 2 else None


def parse_url_list(text: str, source: str) -> list[UrlEntry]:
    """Parses a URL list: one URL per line, optionally followed by its sha256.

    Blank lines and `#` comments (whole-line, or after whitespace at the end of a line) are
    ignored; the sha256 may be upper or lower case and is returned lowercase. URLs of any
    scheme are returned: `fetch` rejects those that are not http(s), so they are reported
    with the other failures instead of vanishing here.

    Duplicates: a URL listed again is dropped and the first listing (its line and
    checksum) kept; two listings of one URL with different checksums are an error.

    Raises ValueError naming `source:line` and the problem for a malformed line (more than
    two fields, or a second field that is not 64 hex characters).
    """
    entries: dict[str, UrlEntry] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        where = f"{source}:{number}"
        parsed = _parse_line(raw, where)
        if parsed is None:
            continue
        url, sha = parsed
        first = entries.get(url)
        if first is None:
            entries[url] = UrlEntry(url=url, sha256=sha, line=number)
        elif sha and first.sha256 and sha != first.sha256:
            raise ValueError(f"{where}: {url} is listed again with sha256 {sha[:12]}..., "
                             f"but line {first.line} gives {first.sha256[:12]}...")
    return list(entries.values())


# --------------------------------------------------------------------------------------
# Errors and results


class FetchError(Exception):
    """A URL that gave no song: why (`reason`, a module constant), the last HTTP status
    seen (None if no response came), the attempts made, and a one-line `detail`."""

    def __init__(self, url: str, reason: str, detail: str, status: int | None = None,
                 attempts: int = 0):
        super().__init__(detail)
        self.url = url
        self.reason = reason
        self.detail = detail
        self.status = status
        self.attempts = attempts

    def __reduce__(self):  # picklable with its fields (Beam may pickle exceptions)
        return (FetchError, (self.url, self.reason, self.detail, self.status, self.attempts))

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict: url, reason, status, attempts, detail."""
        return {"url": self.url, "reason": self.reason, "status": self.status,
                "attempts": self.attempts, "detail": self.detail}


@dataclasses.dataclass
class Fetched:
    """A fetched body: `file` is positioned at 0 and is the caller's to close."""

    file: BinaryIO  # a tempfile.SpooledTemporaryFile
    size: int
    attempts: int
    status: int
    sha256: str  # lowercase hex

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Fetched":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _AttemptFailed(Exception):
    """One attempt's failure, before the retry loop decides whether to try again."""

    def __init__(self, reason: str, what: str, retry: bool, status: int | None = None):
        super().__init__(what)
        self.reason, self.what, self.retry, self.status = reason, what, retry, status


class _RedirectRejected(Exception):
    """A redirect to a scheme we do not fetch."""

    def __init__(self, target: str, code: int):
        super().__init__(target)
        self.target, self.code = target, code


# --------------------------------------------------------------------------------------
# The opener


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects like urllib does, except to a scheme other than http(s)."""

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location.strip())
            if urllib.parse.urlsplit(target).scheme.lower() not in SCHEMES:
                fp.close()
                raise _RedirectRejected(target, code)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _default_opener() -> urllib.request.OpenerDirector:
    """An opener that speaks only http and https (environment proxies honoured)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


# --------------------------------------------------------------------------------------
# Fetching


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _network_failure(exc: BaseException, cfg: FetchConfig) -> _AttemptFailed:
    """Classifies an exception raised while connecting or reading."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    text = _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, http.client.InvalidURL):  # e.g. a redirect to a malformed URL
        return _AttemptFailed(REJECTED_URL, text, retry=False)
    if isinstance(exc, TimeoutError):
        wait = min(cfg.timeout_s, cfg.deadline_s)
        return _AttemptFailed(TIMEOUT, f"timed out: no answer within {wait:g} s", retry=True)
    if isinstance(exc, ssl.SSLCertVerificationError):  # will not fix itself
        return _AttemptFailed(CONNECTION, text, retry=False)
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return _AttemptFailed(CONNECTION, text, retry=True)
    return _AttemptFailed(CONNECTION, text, retry=False)  # e.g. URLError('unknown url type')


def _http_failure(e: urllib.error.HTTPError) -> _AttemptFailed:
    """A non-2xx response: 5xx may pass, anything else (4xx, unfollowed 3xx) will not."""
    e.close()
    return _AttemptFailed(HTTP_ERROR, f"HTTP {e.code} {_one_line(e.reason or '')}".rstrip(),
                          retry=e.code >= 500, status=e.code)


def _open(opener, url: str, cfg: FetchConfig):
    """Sends the request; returns the response (headers read) or raises _AttemptFailed."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return opener.open(request, timeout=min(cfg.timeout_s, cfg.deadline_s))
    except _RedirectRejected as e:
        raise _AttemptFailed(REJECTED_URL, f"redirected (HTTP {e.code}) to {e.target}, which "
                             f"is not {' or '.join(SCHEMES)}", retry=False, status=e.code)
    except urllib.error.HTTPError as e:
        raise _http_failure(e) from None
    except (OSError, http.client.HTTPException) as e:
        raise _network_failure(e, cfg) from None


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


def _recv(response, n: int, cfg: FetchConfig) -> bytes:
    """At most n bytes, with at most one read on the socket (so deadlines are checked)."""
    read = getattr(response, "read1", response.read)
    try:
        return read(n)
    except (OSError, http.client.HTTPException) as e:
        raise _network_failure(e, cfg) from None


def _stream_body(response, spool: BinaryIO, cfg: FetchConfig, started: float) -> tuple[int, str]:
    """Copies the body into `spool` while hashing it; returns (size, sha256 hex)."""
    status = response.status
    declared = _content_length(response)
    if declared is not None and declared > cfg.max_bytes:
        raise _AttemptFailed(TOO_LARGE, f"Content-Length {declared} exceeds the limit of "
                             f"{cfg.max_bytes} bytes", retry=False, status=status)
    digest, size = hashlib.sha256(), 0
    while True:
        if time.monotonic() - started > cfg.deadline_s:
            raise _AttemptFailed(TIMEOUT, f"no complete body within the deadline of "
                                 f"{cfg.deadline_s:g} s ({size} bytes received)",
                                 retry=True, status=status)
        block = _recv(response, cfg.block_bytes, cfg)
        if not block:
            break
        size += len(block)
        if size > cfg.max_bytes:
            raise _AttemptFailed(TOO_LARGE, f"the body exceeds the limit of {cfg.max_bytes} "
                                 "bytes (stopped reading)", retry=False, status=status)
        digest.update(block)
        spool.write(block)
    if declared is not None and size < declared:
        raise _AttemptFailed(CONNECTION, f"the body ended after {size} of the {declared} "
                             "bytes of its Content-Length", retry=True, status=status)
    return size, digest.hexdigest()


def _new_spool(cfg: FetchConfig) -> BinaryIO:
    spool = tempfile.SpooledTemporaryFile(max_size=cfg.spool_bytes, prefix="wavegen-fetch-")
    if cfg.spool_bytes == 0:  # max_size=0 would mean "never spill": spill at once instead
        spool.rollover()
    return spool


def _attempt(opener, url: str, cfg: FetchConfig,
             status_seen: list[int]) -> tuple[BinaryIO, int, int, str]:
    """One attempt: (spool at 0, size, status, sha256) or raises _AttemptFailed."""
    started = time.monotonic()
    try:
        response = _open(opener, url, cfg)
    except _AttemptFailed as e:
        if e.status is not None:
            status_seen.append(e.status)
        raise
    status_seen.append(response.status)
    spool = _new_spool(cfg)
    try:
        with response:
            size, sha = _stream_body(response, spool, cfg, started)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, size, response.status, sha


def _check_url(url: str) -> None:
    """Rejects, before any request, what is not a well-formed http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise FetchError(url, REJECTED_URL, f"{url}: not an http or https URL "
                         "(URL lists may only name http:// and https:// songs)", attempts=0)
    try:
        parts.port
    except ValueError as e:
        raise FetchError(url, REJECTED_URL, f"{url}: bad port ({e})", attempts=0) from None
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise FetchError(url, REJECTED_URL, f"{url!r}: a URL may not hold spaces or control "
                         "characters (write them %-encoded)", attempts=0)


def _check_sha256(url: str, sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{url}: expected sha256 {sha256!r} is not 64 hex characters")
    return sha256.lower()


def fetch(url: str, cfg: FetchConfig = FetchConfig(), sha256: str | None = None, *,
          sleep: Callable[[float], Any] = time.sleep, opener=None) -> Fetched:
    """Downloads one URL into a spooled temporary file, verifying `sha256` if given.

    Retries timeouts (no byte for `timeout_s`, or no complete body within `deadline_s`),
    connection failures (refused, reset, dropped mid-response, a body shorter than its
    Content-Length) and HTTP 5xx, up to `cfg.max_attempts` attempts in all, calling
    `sleep(cfg.backoff(k))` before retry k. Does not retry HTTP 4xx, a body larger than
    `cfg.max_bytes` (refused from its Content-Length, or as soon as the bytes received pass
    it) or a checksum mismatch. Follows redirects, but only to http(s) URLs.

    `opener` (tests, proxies with credentials) is anything with urllib's
    `open(request, timeout=...)`; by default an opener that speaks only http and https.
    Raises FetchError (never anything else for network trouble); the returned
    `Fetched.file` is the caller's to close.
    """
    _check_url(url)
    expected = _check_sha256(url, sha256)
    opener = opener or _default_opener()
    status_seen: list[int] = []
    for attempt in range(1, cfg.max_attempts + 1):
        try:
            spool, size, status, actual = _attempt(opener, url, cfg, status_seen)
        except _AttemptFailed as e:
            if e.retry and attempt < cfg.max_attempts:
                sleep(cfg.backoff(attempt))
                continue
            raise _give_up(url, e, attempt, status_seen) from None
        if expected is not None and actual != expected:
            spool.close()
            raise FetchError(url, CHECKSUM, f"{url}: sha256 mismatch: expected "
                             f"{expected[:12]}..., got {actual[:12]}... ({size} bytes)",
                             status=status, attempts=attempt)
        return Fetched(file=spool, size=size, attempts=attempt, status=status, sha256=actual)
    raise AssertionError("unreachable: max_attempts >= 1")


def _give_up(url: str, e: _AttemptFailed, attempts: int, status_seen: list[int]) -> FetchError:
    """The FetchError for the last attempt's failure."""
    plural = "s" if attempts != 1 else ""
    tries = f"after {attempts} attempt{plural}" if e.retry else f"attempt {attempts}, not retried"
    status = e.status if e.status is not None else (status_seen[-1] if status_seen else None)
    return FetchError(url, e.reason, f"{url}: {e.what} ({tries})", status=status,
                      attempts=attempts)
