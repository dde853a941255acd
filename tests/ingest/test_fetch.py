"""beam_pipelines.ingest.fetch against a real local HTTP server: success, retries, give-ups, URL lists."""

import hashlib
import json
import pickle
import re
import socket
import time

import numpy as np
import pytest

from beam_pipelines.ingest import fetch as F

from songserver import Delay, Drop, Redirect, Respond, Stream, drop_in_body, drop_in_headers, serve

# Timeouts generous enough for a loaded machine on the success paths (the timeout tests
# set their own); `sleep` is injected so backoff costs nothing.
CFG = F.FetchConfig(timeout_s=2.0, deadline_s=10.0, max_attempts=4, backoff_s=0.25,
                    max_backoff_s=10.0, block_bytes=8192)


def body(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def waits():
    """An injected `sleep` that records the backoff waits instead of waiting."""

    class Waits(list):
        def __call__(self, seconds):
            self.append(seconds)

    return Waits()


def fetch_fails(url, waits, cfg=CFG, **kw) -> F.FetchError:
    with pytest.raises(F.FetchError) as info:
        F.fetch(url, cfg, sleep=waits, **kw)
    e = info.value
    assert e.url == url and url in e.detail and "\n" not in e.detail
    return e


# --------------------------------------------------------------------------------------
# Success


def test_ok_reads_back_the_body_and_its_sha256(waits):
    data = body(300_000)
    with serve({"/a.mp3": data}) as base:
        got = F.fetch(base + "/a.mp3", CFG, sleep=waits)
        assert base.requests["/a.mp3"] == 1
        assert base.request_headers[0][1]["User-Agent"] == "wavegen/0.1"
    with got:
        assert got.file.tell() == 0
        assert got.file.read() == data
    assert (got.size, got.sha256, got.status, got.attempts) == (len(data), sha(data), 200, 1)
    assert waits == []


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_right_checksum_is_accepted_in_either_case(waits, case):
    data = body(5000, seed=1)
    with serve({"/a.mp3": data}) as base:
        got = F.fetch(base + "/a.mp3", CFG, case(sha(data)), sleep=waits)
    with got:
        assert got.file.read() == data and got.sha256 == sha(data)


@pytest.mark.parametrize("route", [
    Respond(body(40_000, 2), chunked=True, chunk_bytes=3000),  # chunked transfer encoding
    Respond(body(40_000, 2), length=None),  # no Content-Length: ends when the server closes
])
def test_bodies_without_content_length_read_back_equal(waits, route):
    with serve({"/a.mp3": route}) as base:
        got = F.fetch(base + "/a.mp3", CFG, sleep=waits)
    with got:
        assert got.file.read() == route.body and got.size == len(route.body)


def test_redirect_to_http_is_followed(waits):
    data = body(1000, 3)
    with serve({"/old.mp3": Redirect("/new.mp3", 301), "/new.mp3": data}) as base:
        got = F.fetch(base + "/old.mp3", CFG, sleep=waits)
        assert base.requests == {"/old.mp3": 1, "/new.mp3": 1}
    with got:
        assert got.file.read() == data and got.status == 200


@pytest.mark.parametrize("size,spool_bytes,on_disk", [
    (50_000, 10_000, True), (5_000, 10_000, False), (100, 0, True)])
def test_large_bodies_spill_to_disk_and_read_back_equal(waits, size, spool_bytes, on_disk):
    data = body(size, 4)
    cfg = F.FetchConfig(timeout_s=1.0, block_bytes=4096, spool_bytes=spool_bytes)
    with serve({"/a.mp3": data}) as base:
        got = F.fetch(base + "/a.mp3", cfg, sleep=waits)
    with got:
        assert got.file._rolled is on_disk  # SpooledTemporaryFile: moved to a real file
        assert got.file.tell() == 0 and got.file.read() == data


# --------------------------------------------------------------------------------------
# HTTP errors and retries


@pytest.mark.parametrize("code", [400, 403, 404, 410, 429])
def test_4xx_is_not_retried(waits, code):
    with serve({"/a.mp3": code}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.status, e.attempts) == (F.HTTP_ERROR, code, 1)
    assert str(code) in e.detail and waits == []


def test_500_then_200_succeeds_on_the_second_attempt(waits):
    data = body(20_000, 5)
    with serve({"/a.mp3": [500, data]}) as base:
        got = F.fetch(base + "/a.mp3", CFG, sleep=waits)
        assert base.requests["/a.mp3"] == 2
    with got:
        assert got.file.read() == data
    assert (got.attempts, got.status) == (2, 200)
    assert waits == [CFG.backoff_s]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_always_5xx_gives_up_after_max_attempts_with_doubling_waits(waits, code):
    with serve({"/a.mp3": code}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
        assert base.requests["/a.mp3"] == CFG.max_attempts
    assert (e.reason, e.status, e.attempts) == (F.HTTP_ERROR, code, CFG.max_attempts)
    b = CFG.backoff_s
    assert waits == [b, 2 * b, 4 * b]
    assert f"after {CFG.max_attempts} attempts" in e.detail


def test_backoff_is_capped(waits):
    cfg = F.FetchConfig(timeout_s=1.0, max_attempts=6, backoff_s=1.0, max_backoff_s=5.0)
    with serve({"/a.mp3": 503}) as base:
        e = fetch_fails(base + "/a.mp3", waits, cfg)
    assert e.attempts == 6 and waits == [1.0, 2.0, 4.0, 5.0, 5.0]


# --------------------------------------------------------------------------------------
# Timeouts and dropped connections


def test_a_response_slower_than_the_timeout_times_out_and_is_retried(waits):
    cfg = F.FetchConfig(timeout_s=0.3, max_attempts=3, backoff_s=0.01)
    with serve({"/a.mp3": Delay(10.0, b"too late")}) as base:
        t0 = time.monotonic()
        e = fetch_fails(base + "/a.mp3", waits, cfg)
        elapsed = time.monotonic() - t0
        assert base.requests["/a.mp3"] == 3
    assert (e.reason, e.attempts, e.status) == (F.TIMEOUT, 3, None)
    assert len(waits) == 2
    assert 0.8 < elapsed < 8.0  # three waits of about timeout_s, not the server's 10 s


def test_a_slow_first_answer_then_a_prompt_one_succeeds(waits):
    data = body(3000, 6)
    with serve({"/a.mp3": [Delay(10.0, b"late"), data]}) as base:
        got = F.fetch(base + "/a.mp3", CFG, sleep=waits)
    with got:
        assert got.file.read() == data and got.attempts == 2


def test_a_trickling_body_is_cut_off_at_the_deadline_and_not_retried(waits):
    # Every read gets a byte well within timeout_s, but the whole body would take 20 s.
    cfg = F.FetchConfig(timeout_s=1.0, deadline_s=0.4, max_attempts=3, backoff_s=0.01)
    with serve({"/a.mp3": Stream(b"t", count=1000, interval_s=0.02)}) as base:
        t0 = time.monotonic()
        e = fetch_fails(base + "/a.mp3", waits, cfg)
        elapsed = time.monotonic() - t0
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts, e.status) == (F.TIMEOUT, 1, 200)
    assert "deadline" in e.detail and "not retried" in e.detail
    assert elapsed < 4.0 and waits == []  # one deadline of 0.4 s, not the 20 s of the body


def test_the_deadline_covers_every_attempt_and_wait(waits):
    # 503 for ever with waits of 0.3, 0.6, 1.2 s: the 1 s deadline ends it before the third
    # wait, whatever max_attempts allows.
    slept = []

    def sleep(s):
        slept.append(s)
        time.sleep(s)

    cfg = F.FetchConfig(timeout_s=1.0, deadline_s=1.0, max_attempts=10, backoff_s=0.3)
    with serve({"/a.mp3": 503}) as base:
        with pytest.raises(F.FetchError) as info:
            F.fetch(base + "/a.mp3", cfg, sleep=sleep)
        assert base.requests["/a.mp3"] == 3
    e = info.value
    assert (e.reason, e.status, e.attempts) == (F.TIMEOUT, 503, 3)
    assert slept == [0.3, 0.6] and "deadline" in e.detail


@pytest.mark.parametrize("route", [
    Drop(b""),  # closed before any byte: RemoteDisconnected
    drop_in_headers(),  # closed inside the status line
    drop_in_body(body(10_000), keep=3000),  # orderly close mid-body
    drop_in_body(body(10_000), keep=3000, reset=True),  # TCP reset mid-body
    Respond(b"short", length=1000),  # Content-Length larger than the body sent
], ids=["no_response", "in_headers", "mid_body", "reset_mid_body", "wrong_length"])
def test_dropped_connections_are_connection_errors_and_retried(waits, route):
    with serve({"/a.mp3": route}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
        assert base.requests["/a.mp3"] == CFG.max_attempts
    assert (e.reason, e.attempts) == (F.CONNECTION, CFG.max_attempts)
    assert len(waits) == CFG.max_attempts - 1


def test_a_drop_then_a_full_answer_succeeds(waits):
    data = body(10_000, 7)
    with serve({"/a.mp3": [drop_in_body(data, keep=100), data]}) as base:
        got = F.fetch(base + "/a.mp3", CFG, sha(data), sleep=waits)
    with got:
        assert got.file.read() == data and got.attempts == 2


def test_connection_refused_is_retried(waits):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = fetch_fails(f"http://127.0.0.1:{port}/a.mp3", waits)
    assert (e.reason, e.attempts, e.status) == (F.CONNECTION, CFG.max_attempts, None)
    assert "refused" in e.detail.lower()


# --------------------------------------------------------------------------------------
# Give-ups that are never retried


def test_checksum_mismatch_is_not_retried(waits):
    data, other = body(2000, 8), body(2000, 9)
    with serve({"/a.mp3": data}) as base:
        e = fetch_fails(base + "/a.mp3", waits, sha256=sha(other))
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts, e.status) == (F.CHECKSUM, 1, 200)
    assert sha(other)[:12] in e.detail and sha(data)[:12] in e.detail
    assert waits == []


@pytest.mark.parametrize("route", [
    Respond(body(2000)),  # honest Content-Length over the cap
    Respond(b"tiny", length=10**12),  # a claimed size is enough to refuse
])
def test_too_large_by_content_length_is_refused_before_reading(waits, route):
    cfg = F.FetchConfig(timeout_s=1.0, max_bytes=1000)
    with serve({"/a.mp3": route}) as base:
        e = fetch_fails(base + "/a.mp3", waits, cfg)
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts, e.status) == (F.TOO_LARGE, 1, 200)
    assert "Content-Length" in e.detail and waits == []


@pytest.mark.parametrize("route", [
    # 19 MiB without Content-Length (finite, so a reader that ignores the cap fails, not hangs)
    Stream(b"e" * 65536, count=300, send_length=False),
    Respond(body(300_000), chunked=True),
], ids=["long", "chunked"])
def test_too_large_by_streamed_size_stops_reading(waits, route):
    cfg = F.FetchConfig(timeout_s=1.0, max_bytes=200_000, block_bytes=16384)
    with serve({"/a.mp3": route}) as base:
        t0 = time.monotonic()
        e = fetch_fails(base + "/a.mp3", waits, cfg)
        assert time.monotonic() - t0 < 2.0
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts) == (F.TOO_LARGE, 1)
    assert "200000" in e.detail and waits == []


def test_a_body_of_exactly_max_bytes_is_accepted(waits):
    data = body(4096, 10)
    with serve({"/a.mp3": Respond(data, length=None)}) as base:
        got = F.fetch(base + "/a.mp3", F.FetchConfig(timeout_s=1.0, max_bytes=4096,
                                                      block_bytes=1000), sleep=waits)
    with got:
        assert got.size == 4096


class RecordingPool:
    def __init__(self):
        self.calls = []

    def urlopen(self, method, url, **kw):
        self.calls.append(url)
        raise AssertionError("no request may be made")


@pytest.mark.parametrize("url", ["ftp://example.com/a.mp3", "file:///etc/hostname",
                                 "s3://bucket/a.mp3", "gs://bucket/a.mp3", "songs/a.mp3",
                                 "http:///no-host.mp3", "http://a.example:99999/a.mp3",
                                 "http://a.example:port/a.mp3", "http://a.example/a b.mp3",
                                 "https://a.example/a\r\nX-Injected: 1"])
def test_other_schemes_are_rejected_without_a_request(waits, url):
    pool = RecordingPool()
    with pytest.raises(F.FetchError) as info:
        F.fetch(url, CFG, sleep=waits, pool=pool)
    e = info.value
    assert e.url == url and repr(url)[1:-1] in e.detail and "\n" not in e.detail
    assert (e.reason, e.attempts, e.status) == (F.REJECTED_URL, 0, None)
    assert pool.calls == [] and waits == []


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/a.mp3", "file:///etc/hostname"])
def test_redirects_to_other_schemes_are_rejected(waits, target):
    with serve({"/a.mp3": Redirect(target)}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts, e.status) == (F.REJECTED_URL, 1, 302)
    assert target in e.detail and waits == []


def test_a_redirect_to_a_malformed_url_is_rejected(waits):
    with serve({"/a.mp3": Redirect("http://127.0.0.1:nonnumeric/a.mp3")}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
        assert base.requests["/a.mp3"] == 1
    assert (e.reason, e.attempts) == (F.REJECTED_URL, 1)
    assert "port" in e.detail and waits == []


def test_the_status_reported_is_the_last_one_seen(waits):
    cfg = F.FetchConfig(timeout_s=0.2, max_attempts=2, backoff_s=0.01)
    with serve({"/a.mp3": [503, Delay(10.0, b"late")]}) as base:
        e = fetch_fails(base + "/a.mp3", waits, cfg)
    assert (e.reason, e.status, e.attempts) == (F.TIMEOUT, 503, 2)


# --------------------------------------------------------------------------------------
# Errors as records, configuration


def test_fetch_error_record_is_json_and_pickles(waits):
    with serve({"/a.mp3": 404}) as base:
        e = fetch_fails(base + "/a.mp3", waits)
    record = json.loads(json.dumps(e.to_record()))
    assert record == {"url": base + "/a.mp3", "reason": "http_error", "status": 404,
                      "attempts": 1, "detail": e.detail}
    again = pickle.loads(pickle.dumps(e))
    assert again.to_record() == e.to_record() and str(again) == e.detail


def test_bad_config_and_bad_checksum_argument_are_named():
    with pytest.raises(ValueError, match="max_attempts"):
        F.FetchConfig(max_attempts=0)
    with pytest.raises(ValueError, match="timeout_s"):
        F.FetchConfig(timeout_s=-1)
    with pytest.raises(ValueError, match="http://x/a.mp3.*not 64 hex"):
        F.fetch("http://x/a.mp3", CFG, "abc", pool=RecordingPool())


# --------------------------------------------------------------------------------------
# URL lists


def test_url_list_comments_blanks_checksums_and_other_schemes():
    h1, h2 = sha(b"one"), sha(b"two")
    text = (f"\ufeff# my songs\n"
            f"http://a.example/1.mp3\n"
            f"\n"
            f"   \t\n"
            f"https://a.example/2.mp3 {h2.upper()}   # the second\r\n"
            f"  http://a.example/3.mp3#t=10\t{h1}\n"
            f"ftp://a.example/4.mp3\n"
            f"#http://a.example/commented.mp3\n")
    entries = F.parse_url_list(text, "songs.urls")
    assert entries == [
        F.UrlEntry("http://a.example/1.mp3", None, 2),
        F.UrlEntry("https://a.example/2.mp3", h2, 5),
        F.UrlEntry("http://a.example/3.mp3#t=10", h1, 6),
        F.UrlEntry("ftp://a.example/4.mp3", None, 7),
    ]


@pytest.mark.parametrize("line,problem", [
    ("http://a.example/x.mp3 {h} extra", "3 fields"),
    ("http://a.example/my song.mp3", "not a sha256"),
    ("http://a.example/x.mp3 {h}0", "not a sha256"),  # 65 characters
    ("http://a.example/x.mp3 {short}", "not a sha256"),  # 63 characters
    ("http://a.example/x.mp3 {nonhex}", "not a sha256"),
])
def test_url_list_malformed_lines_are_named(line, problem):
    h = sha(b"x")
    line = line.format(h=h, short=h[:63], nonhex="g" + h[1:])
    text = "# list\nhttp://a.example/ok.mp3\n" + line + "\n"
    ok, bad = F.parse_url_list(text, "songs.urls")
    assert ok == F.UrlEntry("http://a.example/ok.mp3", None, 2)
    assert (bad.line, bad.sha256) == (3, None)
    assert re.match(r"songs\.urls:3: .*" + problem, bad.problem) and "\n" not in bad.problem


def test_url_list_duplicates_keep_the_first():
    h = sha(b"x")
    text = (f"http://a.example/1.mp3 {h}\nhttp://a.example/2.mp3\n"
            f"http://a.example/1.mp3\nhttp://a.example/1.mp3 {h.upper()}\n")
    entries = F.parse_url_list(text, "songs.urls")
    assert entries == [F.UrlEntry("http://a.example/1.mp3", h, 1),
                       F.UrlEntry("http://a.example/2.mp3", None, 2)]


def test_url_list_duplicate_with_another_checksum_is_an_error():
    text = f"http://a.example/1.mp3 {sha(b'x')}\n\nhttp://a.example/1.mp3 {sha(b'y')}\n"
    with pytest.raises(ValueError, match=r"songs\.urls:3: .*line 1"):
        F.parse_url_list(text, "songs.urls")


def test_url_list_of_only_comments_is_empty():
    assert F.parse_url_list("# nothing yet\n\n", "songs.urls") == []


# --------------------------------------------------------------------------------------
# Connections


def test_the_pool_fetch_makes_is_closed_whether_it_succeeds_or_fails(waits, monkeypatch):
    made = []
    default_pool = F._default_pool

    def recording_pool(url):
        made.append(default_pool(url))
        return made[-1]

    monkeypatch.setattr(F, "_default_pool", recording_pool)
    data = body(20_000, 9)
    with serve({"/a.mp3": data}) as base:
        with F.fetch(base + "/a.mp3", CFG, sleep=waits) as got:
            assert got.file.read() == data
        fetch_fails(base + "/missing.mp3", waits)
    assert len(made) == 2
    assert [len(pool.pools) for pool in made] == [0, 0]  # no connection pool left open
