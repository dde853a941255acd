"""Songs from URL lists: parsing `songs.urls` and fetching each song over HTTP(S).

A URL list holds one http or https URL per line, optionally followed by the song's sha256
(64 hex characters) after whitespace; blank lines and `#` comments are ignored.

`fetch` streams one URL's body into a spooled temporary file (memory up to
`FetchConfig.spool_bytes`, disk beyond) while hashing it. It stands on urllib3: a `Retry`
retries what may succeed on a second try (timeouts, dropped or refused connections, HTTP
5xx) with exponential backoff, a bounded number of times; a body cut short while
streaming is retried through the same `Retry`. It gives up at once on what will not
succeed (HTTP 4xx, a body over the size cap, a checksum mismatch, a URL that is not
http(s), a URL past its deadline). Every give-up is a `FetchError` whose `to_record()`
is one line of a dead-letter file.

Credentials in a URL (`https://user:password@host/song.mp3`) are sent as HTTP Basic
auth, and only to that URL's own scheme, host and port (a redirect elsewhere does not
get them). They are never shown: every URL that leaves this module in a message, a
FetchError or a song id is `public_url(url)`, and free text that quotes a URL goes
through `redact`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import re
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, BinaryIO

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from wavegen.errors import one_line

USER_AGENT = "wavegen/0.1"
SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10

# Why a URL gave no song. Stable names: they key failed.jsonl, the summary and metrics.
REJECTED_URL = "rejected_url"  # not a valid http(s) URL (never requested), or redirected to one
HTTP_ERROR = "http_error"  # a 4xx, a 5xx on the last attempt, or an unfollowable 3xx
TIMEOUT = "timeout"  # no byte within timeout_s, or the URL's deadline_s passed
CONNECTION = "connection_error"  # refused, reset, dropped mid-response, body cut short
TOO_LARGE = "too_large"  # Content-Length or the bytes received exceed max_bytes
CHECKSUM = "checksum_mismatch"  # the body's sha256 is not the one the list gave

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")  # used with fullmatch
# 'scheme://' then anything up to an '@' before the next '/': the userinfo of a URL in
# free text. Wider than a valid URL's userinfo on purpose ('#' or '?' in a password
# typed unencoded): a message may lose a little text, never show a password.
_USERINFO_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")


# --------------------------------------------------------------------------------------
# Credentials


def split_userinfo(url: str) -> tuple[str, str]:
    """(the URL without its userinfo, the userinfo) — 'http://u:p@h/a' -> ('http://h/a',
    'u:p'). The authority is found as urllib.parse.urlsplit finds it (up to the first
    '/', '?' or '#' after '//', userinfo up to its last '@'); the rest of the URL is kept
    exactly as written."""
    head, sep, rest = url.partition("//")
    if not sep:
        return url, ""
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at:
        return url, ""
    return head + sep + host + rest[end:], userinfo


def public_url(url: str) -> str:
    """`url` without the credentials it may carry: what may be stored or shown."""
    return split_userinfo(url)[0]


def with_userinfo(url: str, userinfo: str) -> str:
    """The inverse of split_userinfo."""
    if not userinfo:
        return url
    head, sep, rest = url.partition("//")
    return f"{head}{sep}{userinfo}@{rest}"


def redact(text: str) -> str:
    """`text` (a message, a line of a URL list) with the userinfo of every URL in it
    removed."""
    return _USERINFO_IN_TEXT.sub(r"\1", text)


def _basic_auth(userinfo: str) -> dict[str, str]:
    """The Authorization header for a URL's userinfo ('user:password', %-encoded)."""
    if not userinfo:
        return {}
    user, _, password = userinfo.partition(":")
    plain = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return {"Authorization": "Basic " + base64.b64encode(plain.encode("utf-8")).decode()}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How hard and how long to try one URL.

    The k-th retry waits min(backoff_s * 2**(k-1), max_backoff_s) before it starts: with the
    defaults 1 s, 2 s, 4 s between the 4 attempts. `deadline_s` bounds the whole URL, every
    attempt and wait included; a URL past it is given up, not retried.
    """

    timeout_s: float = 30.0  # connect timeout, and the longest wait for any single read
    deadline_s: float = 600.0  # wall-clock limit of one URL, all attempts and waits included
    max_attempts: int = 4  # attempts in total, the first included
    backoff_s: float = 1.0  # wait before the 2nd attempt; doubles for each later one
    max_backoff_s: float = 30.0  # no wait is longer than this
    max_bytes: int = 5 * 10**9  # a larger body is refused (too_large)
    block_bytes: int = 1 << 20  # read size
    spool_bytes: int = 64 << 20  # bodies up to this size stay in memory; larger go to disk

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            number = (int,) if f.type == "int" else (int, float)
            zero_ok = f.name in ("backoff_s", "max_backoff_s", "spool_bytes")
            if (isinstance(value, bool) or not isinstance(value, number)
                    or not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok)):
                raise ValueError(f"FetchConfig.{f.name} must be a finite {f.type} "
                                 f"{'>= 0' if zero_ok else '> 0'}, got {value!r}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 = the second attempt)."""
        return min(self.backoff_s * 2 ** (retry - 1), self.max_backoff_s)


# --------------------------------------------------------------------------------------
# URL lists


@dataclasses.dataclass(frozen=True)
class UrlEntry:
    """One song of a URL list: its URL, its sha256 if the list gave one, and its line;
    `problem` says why a line that is not 'URL [SHA256]' cannot be fetched."""

    url: str
    sha256: str | None  # lowercase hex
    line: int  # 1-based line number in the list
    problem: str = ""


def _strip_comment(line: str) -> str:
    """Drops a `#` comment: one that starts the line or follows whitespace.

    A `#` inside a URL (`http://host/a.mp3#t=10`) is the URL's fragment, not a comment.
    """
    m = re.search(r"(^|\s)#", line)
    return line[:m.start()] if m else line


def _parse_line(raw: str, where: str) -> UrlEntry | None:
    """One line -> its entry (with a problem if malformed), None for a blank or comment."""
    fields = _strip_comment(raw).split()
    if not fields:
        return None
    line = int(where.rsplit(":", 1)[1])
    problem = ""
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in raw):  # undecodable bytes (surrogateescape)
        problem = "the line is not UTF-8 text"
    elif len(fields) > 2:
        problem = (f"expected 'URL [SHA256]', got {len(fields)} fields; write spaces inside a "
                   "URL as %20")
    elif len(fields) == 2 and not _SHA256.fullmatch(fields[1]):
        problem = (f"{fields[1]!r} after the URL is not a sha256 (64 hex characters); write "
                   "spaces inside a URL as %20")
    if problem:
        shown = redact(raw.strip())
        return UrlEntry(url=shown, sha256=None, line=line,
                        problem=f"{where}: {problem} ({shown!r})")
    return UrlEntry(url=fields[0], sha256=fields[1].lower() if len(fields) == 2 else None,
                    line=line)


def parse_url_list(text: str, source: str) -> list[UrlEntry]:
    """Parses a URL list: one URL per line, optionally followed by its sha256.

    Blank lines and `#` comments (whole-line, or after whitespace at the end of a line) are
    ignored; the sha256 may be upper or lower case and is returned lowercase. URLs of any
    scheme are returned: `fetch` rejects those that are not http(s), so they are reported
    with the other failures instead of vanishing here. A malformed line (more than two
    fields, a second field that is not 64 hex characters, bytes that are not UTF-8) is
    returned with its `problem` naming `source:line`, for the caller to dead-letter.

    Duplicates: a URL listed again (credentials aside) is dropped and the first listing
    (its line, checksum and credentials) kept; two listings of one URL with different
    checksums are an error (ValueError naming both lines). A malformed line's `url` and
    `problem` hold no credentials (`redact`); a good line's `url` keeps them, for `fetch`.
    """
    entries: dict[str, UrlEntry] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        where = f"{source}:{number}"
        entry = _parse_line(raw, where)
        if entry is None:
            continue
        key = where if entry.problem else public_url(entry.url)
        first = entries.get(key)
        if first is None:
            entries[key] = entry
        elif entry.sha256 and first.sha256 and entry.sha256 != first.sha256:
            raise ValueError(f"{where}: {public_url(entry.url)} is listed again with sha256 "
                             f"{entry.sha256[:12]}..., but line {first.line} gives "
                             f"{first.sha256[:12]}...")
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


# --------------------------------------------------------------------------------------
# Fetching


class _GiveUp(Exception):
    """Ends a fetch: why, what happened, the last HTTP status, and whether it was retried."""

    def __init__(self, reason: str, what: str, status: int | None = None,
                 retried: bool = False):
        super().__init__(what)
        self.reason, self.what, self.status, self.retried = reason, what, status, retried


@dataclasses.dataclass
class _Attempts:
    """What every copy of one URL's `_Retry` shares: the attempts made so far, the last
    HTTP status seen, the URL's clock and the `sleep` to wait with."""

    cfg: FetchConfig
    sleep: Callable[[float], Any]
    started: float = dataclasses.field(default_factory=time.monotonic)
    made: int = 1
    status: int | None = None

    def left(self) -> float:
        return self.cfg.deadline_s - (time.monotonic() - self.started)

    def check_deadline(self, received: int) -> None:
        if self.left() <= 0:
            raise _GiveUp(TIMEOUT, f"no complete body within the deadline of "
                          f"{self.cfg.deadline_s:g} s ({received} bytes received)", self.status)


class _Retry(urllib3.Retry):
    """urllib3's Retry with wavegen's policy: 5xx, timeouts and dropped connections retried,
    `max_attempts` in all; before retry k a wait of `FetchConfig.backoff(k)` (urllib3 waits
    nothing before the first retry) through the injected `sleep`, unless the wait would
    run past the URL's deadline; TLS errors not retried; redirects left to `_open`."""

    attempts: _Attempts

    @classmethod
    def for_url(cls, attempts: _Attempts) -> "_Retry":
        cfg = attempts.cfg
        retry = cls(total=cfg.max_attempts - 1, other=0, redirect=False,
                    raise_on_redirect=False, status_forcelist=range(500, 600),
                    raise_on_status=False, respect_retry_after_header=False)
        retry.attempts = attempts
        return retry

    def new(self, **kw) -> "_Retry":
        retry = super().new(**kw)
        retry.attempts = self.attempts
        return retry

    def increment(self, *args, **kw) -> "_Retry":
        response = kw.get("response", args[2] if len(args) > 2 else None)
        if response is not None:
            self.attempts.status = response.status
        retry = super().increment(*args, **kw)  # raises MaxRetryError when attempts run out
        self.attempts.made += 1
        return retry

    def get_backoff_time(self) -> float:
        return self.attempts.cfg.backoff(len(self.history)) if self.history else 0.0

    def sleep(self, response=None) -> None:
        wait = self.get_backoff_time()
        if wait >= self.attempts.left():  # the next attempt is not made
            self.attempts.made -= 1
            raise _GiveUp(TIMEOUT, f"the deadline of {self.attempts.cfg.deadline_s:g} s "
                          f"would pass before attempt {self.attempts.made + 1}",
                          self.attempts.status)
        self.attempts.sleep(wait)


def _url_problem(url: str) -> str | None:
    """Why `url` is not a well-formed http(s) URL, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        return "not an http or https URL (URL lists may only name http:// and https:// songs)"
    try:
        parts.port
    except ValueError as e:
        return f"bad port ({e})"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "a URL may not hold spaces or control characters (write them %-encoded)"
    return None


def _default_pool(url: str) -> urllib3.PoolManager:
    """A pool for `url`, through the environment's proxy for its scheme if it names one."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme.lower())
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy)
    return urllib3.PoolManager()


def _open(pool, url: str, retry: _Retry, attempts: _Attempts, userinfo: str = ""):
    """GETs `url` (credentials apart, in `userinfo`), following redirects to http(s) URLs
    only; returns the final response with its body unread (statuses 5xx and timeouts are
    retried inside urllib3)."""
    for _ in range(MAX_REDIRECTS + 1):
        wait = max(min(attempts.cfg.timeout_s, attempts.left()), 1e-3)
        response = pool.urlopen("GET", url, headers={"User-Agent": USER_AGENT,
                                                     **_basic_auth(userinfo)},
                                retries=retry, redirect=False, preload_content=False,
                                decode_content=False, timeout=urllib3.Timeout(wait, wait))
        attempts.status = response.status
        location = response.headers.get("Location")
        if response.status not in REDIRECTS or not location:
            return response
        response.close()
        target, target_userinfo = split_userinfo(urllib.parse.urljoin(url, location.strip()))
        problem = _url_problem(target)
        if problem:
            raise _GiveUp(REJECTED_URL, f"redirected (HTTP {response.status}) to {target}, "
                          f"which is not usable: {problem}", response.status)
        # The credentials go with the redirect only to the same origin (as browsers and
        # requests do): another host must not learn them.
        if target_userinfo or _origin(target) != _origin(url):
            userinfo = target_userinfo
        url, retry = target, response.retries or retry
    raise _GiveUp(HTTP_ERROR, f"more than {MAX_REDIRECTS} redirects", attempts.status)


def _read_body(response, spool: BinaryIO, attempts: _Attempts) -> tuple[int, str]:
    """Streams the body into `spool` while hashing it; returns (size, sha256 hex)."""
    cfg = attempts.cfg
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cfg.max_bytes:
        raise _GiveUp(TOO_LARGE, f"Content-Length {declared} exceeds the limit of "
                      f"{cfg.max_bytes} bytes", response.status)
    digest, size = hashlib.sha256(), 0
    while True:
        attempts.check_deadline(size)
        block = response.read1(cfg.block_bytes)  # what one read gives: deadlines hold
        if not block:
            return size, digest.hexdigest()
        size += len(block)
        if size > cfg.max_bytes:
            raise _GiveUp(TOO_LARGE, f"the body exceeds the limit of {cfg.max_bytes} bytes "
                          "(stopped reading)", response.status)
        digest.update(block)
        spool.write(block)


def _download(pool, url: str, spool: BinaryIO, attempts: _Attempts,
              userinfo: str = "") -> tuple[int, str]:
    """The body of `url` into `spool`: (size, sha256). A body that breaks off or stalls
    is retried through the same Retry as the request; raises _GiveUp or MaxRetryError."""
    retry = _Retry.for_url(attempts)
    while True:
        response = _open(pool, url, retry, attempts, userinfo)
        try:
            if response.status >= 300:  # 4xx, an unfollowable 3xx, or 5xx to the end
                raise _GiveUp(HTTP_ERROR, f"HTTP {response.status} "
                              f"{one_line(response.reason or '')}".rstrip(),
                              response.status, retried=response.status >= 500)
            spool.seek(0)
            spool.truncate()
            return _read_body(response, spool, attempts)
        except HTTPError as e:  # urllib3's: the body broke off, timed out or was cut short
            retry = (response.retries or retry).increment("GET", url, error=e)
            retry.sleep()
        finally:
            response.close()


def _network_failure(e: MaxRetryError, timeout_s: float) -> _GiveUp:
    """The last error of a URL whose retries ran out."""
    cause = e.reason if e.reason is not None else e
    if isinstance(cause, Urllib3Timeout) and not isinstance(cause, NewConnectionError):
        return _GiveUp(TIMEOUT, f"timed out: no answer within {timeout_s:g} s", retried=True)
    return _GiveUp(CONNECTION, one_line(f"{type(cause).__name__}: {cause}"), retried=True)


def _check_sha256(url: str, sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"{url}: expected sha256 {sha256!r} is not 64 hex characters")
    return sha256.lower()


def _new_spool(cfg: FetchConfig) -> BinaryIO:
    spool = tempfile.SpooledTemporaryFile(max_size=cfg.spool_bytes, prefix="wavegen-fetch-")
    if cfg.spool_bytes == 0:  # max_size=0 would mean "never spill": spill at once instead
        spool.rollover()
    return spool


def fetch(url: str, cfg: FetchConfig = FetchConfig(), sha256: str | None = None, *,
          sleep: Callable[[float], Any] = time.sleep, pool=None) -> Fetched:
    """Downloads one URL into a spooled temporary file, verifying `sha256` if given.

    Retries timeouts (no byte for `timeout_s`), connection failures (refused, reset,
    dropped mid-response, a body shorter than its Content-Length) and HTTP 5xx, up to
    `cfg.max_attempts` attempts in all, calling `sleep(cfg.backoff(k))` before retry k.
    Does not retry HTTP 4xx, a body larger than `cfg.max_bytes` (refused from its
    Content-Length, or as soon as the bytes received pass it), a checksum mismatch, or a
    URL past `cfg.deadline_s`. Follows redirects, but only to http(s) URLs.

    `pool` (tests, proxies with credentials) is anything with urllib3's `urlopen`; by
    default a PoolManager of its own (the environment's proxy if it names one), closed
    before it returns. Raises FetchError
    (never anything else for network trouble); `Fetched.file` is the caller's to close.
    Credentials in `url` are sent as Basic auth and appear in no message or error.
    """
    problem = _url_problem(url)
    if problem:
        url = redact(url)
        shown = url if url.isprintable() and " " not in url else repr(url)
        raise FetchError(url, REJECTED_URL, f"{shown}: {problem}", attempts=0)
    url, userinfo = split_userinfo(url)
    expected = _check_sha256(url, sha256)
    attempts = _Attempts(cfg, sleep)
    spool = _new_spool(cfg)
    owned = _default_pool(url) if pool is None else None  # ours to close when done
    try:
        size, actual = _download(pool or owned, url, spool, attempts, userinfo)
        if expected is not None and actual != expected:
            raise _GiveUp(CHECKSUM, f"sha256 mismatch: expected {expected[:12]}..., got "
                          f"{actual[:12]}... ({size} bytes)", attempts.status)
    except (_GiveUp, MaxRetryError) as e:
        spool.close()
        if isinstance(e, MaxRetryError):
            e = _network_failure(e, min(cfg.timeout_s, cfg.deadline_s))
        n = attempts.made
        tries = f"after {n} attempt{'s' * (n != 1)}" if e.retried else \
            f"attempt {n}, not retried"
        raise FetchError(url, e.reason, f"{url}: {e.what} ({tries})",
                         status=e.status if e.status is not None else attempts.status,
                         attempts=n) from None
    except BaseException:
        spool.close()
        raise
    finally:
        if owned is not None:
            owned.clear()  # its connections: the body is read whole into the spool
    spool.seek(0)
    return Fetched(file=spool, size=size, attempts=attempts.made, status=attempts.status,
                   sha256=actual)
