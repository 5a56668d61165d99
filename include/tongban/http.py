"""The one HTTP client of every exchange: partner reads, report delivery, platform pushes and reads,
outbound writes.

:class:`HttpClient` drives each request attempt by attempt: the request is prepared anew for every
attempt, so its :class:`Signer` (a requests ``AuthBase``) signs it with a fresh timestamp and nonce
(:mod:`tongban.auth`); a connect and a read timeout; the body streamed and cut off above
``max_response_bytes``; connection errors, timeouts, 429 and 5xx (honouring ``Retry-After`` up to
``max_retry_after``) and answers the caller finds damaged (:class:`TryAgain`) are retried with
exponential backoff and jitter by urllib3's :class:`~urllib3.util.Retry` (:class:`Backoff`), the
session's adapter never retrying by itself (a re-sent signed request would be a replay). Anything
else fails at once with :class:`HttpFailure`, whose message names who was asked, the request and
the other side's own reason. Every attempt is noted in a log entry (a dict the caller may extend:
the fetch manifest, the delivery record). TLS verification is never switched off.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import InvalidHeader, MaxRetryError
from urllib3.util import Retry

from tongban.auth import MissingSecret, redact, url_headers
from tongban.registry import Auth

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_STATUSES = (429, 500, 502, 503, 504)
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    Urllib3Error,
)


class Backoff(Retry):
    """urllib3's Retry whose backoff starts at the first retry: ``backoff × 2^(n−1)`` plus up to
    ``backoff_jitter`` seconds at random, capped at ``backoff_max`` (urllib3 retries the first time at
    once, which is what a server in trouble least needs)."""

    def get_backoff_time(self) -> float:
        consecutive = 0
        for entry in reversed(self.history):
            if entry.redirect_location is not None:
                break
            consecutive += 1
        if consecutive == 0:
            return 0.0
        value = self.backoff_factor * (2 ** (consecutive - 1))
        if self.backoff_jitter:
            value += random.random() * self.backoff_jitter
        return float(max(0.0, min(self.backoff_max, value)))


def retry_policy(retries: int, backoff: float, backoff_max: float = 60.0, jitter: float = 0.25) -> Backoff:
    """The one retry policy: connection errors, timeouts, 429 and 5xx, Retry-After honoured."""
    return Backoff(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=retries,
        backoff_factor=backoff,
        backoff_jitter=jitter,
        backoff_max=backoff_max,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # retry POST too: publishing is made safe by idempotency keys
        respect_retry_after_header=True,
        raise_on_status=False,
    )


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts, retries and the size cap of one client. Defaults suit the nightly run; tests shorten the waits."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5  # further attempts of one request after the first
    backoff: float = 1.0  # seconds before the first retry, doubled for each consecutive one
    backoff_max: float = 60.0
    jitter: float = 1.0  # up to this many seconds added at random to each wait
    max_retry_after: float = 300.0  # a server asking for a longer wait fails the request instead
    max_response_bytes: int = 32 * 1024 * 1024

    def retry(self) -> Backoff:
        return retry_policy(self.retries, self.backoff, self.backoff_max, self.jitter)


def session() -> requests.Session:
    """A session whose adapter never retries by itself (:class:`HttpClient` drives every attempt, each
    one signed anew). TLS verification stays on (requests' default)."""
    s = requests.Session()
    adapter = HTTPAdapter(max_retries=Retry(total=0, read=False, redirect=False))
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    return s


class Signer(AuthBase):
    """Signs a prepared request (:func:`tongban.auth.url_headers`) over its method, path, query, body and
    the headers its ``Auth`` signs; called for every attempt, so every attempt has its own timestamp and nonce."""

    def __init__(
        self,
        auth: Auth,
        secret: str | None,
        algorithm: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth, self.secret, self.algorithm, self.clock = auth, secret, algorithm, clock

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body
        if body is not None and not isinstance(body, bytes | str):
            raise TypeError("a signed request needs its body as bytes, not a stream")
        signed = url_headers(
            self.auth,
            self.secret,
            request.method or "GET",
            request.url or "",
            body=body,
            algorithm=self.algorithm,
            headers=request.headers,
            clock=self.clock,
        )
        request.headers.update(signed)
        return request


class ResponseTooLarge(Exception):
    def __init__(self, limit: int, read: bytes, declared: int | None) -> None:
        super().__init__(limit)
        self.limit, self.read, self.declared = limit, read, declared


def read_capped(response: requests.Response, limit: int) -> bytes:
    """The (decompressed) body of a streamed response; ResponseTooLarge above ``limit`` bytes."""
    declared = response.headers.get("Content-Length")
    size = int(declared) if declared and declared.isdigit() else None
    if size is not None and size > limit and not response.headers.get("Content-Encoding"):
        raise ResponseTooLarge(limit, b"", size)
    body = bytearray()
    for chunk in response.iter_content(chunk_size=64 * 1024):
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(limit, bytes(body[:limit]), size)
    return bytes(body)


class TryAgain(Exception):
    """Raised by a caller's check of an answer it finds damaged in transit: the attempt is retried."""


class HttpFailure(RuntimeError):
    """A request that did not get a usable answer; ``retryable`` if trying later may help (the other side
    is down or overloaded), as opposed to an answer that will not change by itself."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass
class Answer:
    """What one attempt got: status, headers, the whole body, and the attempt's log entry."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    entry: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


def reason(body: bytes) -> str:
    """The other side's own message, from a JSON ``error``/``message``/``msg``/``errmsg`` or the body's start."""
    text = body[:2000].decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:200].strip() or "(empty body)"
    if isinstance(payload, dict):
        for key in ("error", "message", "msg", "errmsg"):
            if payload.get(key):
                return str(payload[key])
    return text[:200]


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class HttpClient:
    """Requests to one counterpart (``who`` names it in messages), signed by ``signer``."""

    def __init__(
        self,
        who: str,
        signer: Signer | None,
        settings: HttpSettings | None = None,
        http: requests.Session | None = None,
    ) -> None:
        self.who, self.signer = who, signer
        self.settings = settings or HttpSettings()
        self.http = http or session()
        if self.http.verify is False:
            raise ValueError("TLS verification must stay on for partner and platform APIs")

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        what: str = "",
        log_to: list[dict[str, Any]] | None = None,
        note: Mapping[str, Any] | None = None,
        on_body: Callable[[Answer, requests.Response | None], None] | None = None,
        check: Callable[[Answer], T] | None = None,
    ) -> T | Answer:
        """One request, all its attempts; the value of ``check`` (default: the answer, if 2xx).

        ``what`` describes the request in messages (default ``METHOD url params``); ``log_to`` gets one
        entry per attempt, starting with ``note``; ``on_body`` sees every body read (before it is judged:
        e.g. to archive it), ``check`` judges a non-retried answer and may raise :class:`TryAgain`.
        """
        what = what or f"{method} {url}" + (f" {dict(params)}" if params else "")
        retry = self.settings.retry()
        log_to = [] if log_to is None else log_to
        attempt = 0
        while True:
            attempt += 1
            entry: dict[str, Any] = {**(note or {}), "attempt": attempt, "method": method, "url": url}
            if params is not None:
                entry["params"] = dict(params)
            log_to.append(entry)
            try:
                prepared = self.http.prepare_request(
                    requests.Request(
                        method, url, params=params, data=data, headers=dict(headers or {}), auth=self.signer
                    )
                )
            except MissingSecret as exc:
                raise self._fail(entry, f"{self.who}: no credentials: {exc}", retryable=False) from exc
            auth = self.signer.auth if self.signer else None
            entry["headers"] = redact(auth, prepared.headers) if auth else dict(prepared.headers)
            entry["requested_at"] = datetime.now(UTC).isoformat()
            started = time.monotonic()
            response = None
            try:
                response = self.http.send(
                    prepared,
                    timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                    stream=True,
                    allow_redirects=False,
                )
                with response:
                    body = read_capped(response, self.settings.max_response_bytes)
            except ResponseTooLarge as exc:
                entry.update(status=response.status_code if response is not None else None, elapsed_ms=_ms(started))
                entry["truncated"] = True
                if on_body is not None:
                    on_body(
                        Answer(entry["status"] or 0, response.headers if response else {}, exc.read, entry), response
                    )
                size = f"声明 {exc.declared} 字节" if exc.declared else f"已读 {len(exc.read)} 字节仍未结束"
                message = f"{self.who}: {what}: response over the {exc.limit}-byte cap ({size})"
                raise self._fail(entry, message, retryable=False) from None
            except requests.exceptions.SSLError as exc:
                entry.update(status=None, elapsed_ms=_ms(started), error=f"TLS: {exc}")
                message = f"{self.who}: {method} {url}: TLS verification failed (it is never switched off): {exc}"
                raise self._fail(entry, message, retryable=False) from None
            except TRANSIENT as exc:
                entry.update(status=None, elapsed_ms=_ms(started), error=f"{type(exc).__name__}: {exc}")
                retry = self._again(retry, entry, what, method, url, error=exc)
                continue
            except requests.RequestException as exc:
                entry.update(status=None, elapsed_ms=_ms(started), error=f"{type(exc).__name__}: {exc}")
                raise self._fail(entry, f"{self.who}: {what}: {exc}", retryable=False) from None
            entry.update(status=response.status_code, elapsed_ms=_ms(started))
            answer = Answer(response.status_code, response.headers, body, entry)
            if on_body is not None:
                on_body(answer, response)
            if answer.status in RETRY_STATUSES:
                entry["error"] = f"HTTP {answer.status}: {reason(body)}"
                retry = self._again(retry, entry, what, method, url, response=response)
                continue
            try:
                value = check(answer) if check is not None else self._ok(answer, what)
            except TryAgain as exc:
                entry["error"] = str(exc)
                retry = self._again(retry, entry, what, method, url, error=exc)
                continue
            except Exception as exc:
                entry["outcome"] = "failed"
                entry.setdefault("error", str(exc))
                raise
            entry["outcome"] = "ok"
            return value

    def _ok(self, answer: Answer, what: str) -> Answer:
        if 200 <= answer.status < 300:
            return answer
        message = f"{self.who}: {what} answered HTTP {answer.status}: {reason(answer.body)}"
        raise HttpFailure(message, retryable=False, status=answer.status)

    def _again(
        self,
        retry: Retry,
        entry: dict[str, Any],
        what: str,
        method: str,
        url: str,
        *,
        response: requests.Response | None = None,
        error: Exception | None = None,
    ) -> Retry:
        """Count a failed attempt against the policy and wait; HttpFailure when the policy is spent."""
        entry["outcome"] = "retry"
        raw = response.raw if response is not None else None
        try:
            retry = retry.increment(method, url, response=raw, error=error)
        except MaxRetryError:
            message = (
                f"{self.who}: {what} still failing after {entry['attempt']} attempts "
                f"(retries with backoff exhausted); last: {entry.get('error')}"
            )
            raise self._fail(entry, message, retryable=True) from None
        if response is not None and (value := response.headers.get("Retry-After")):
            try:
                wait = retry.parse_retry_after(value)
            except InvalidHeader:
                wait = None
            if wait is not None and wait > self.settings.max_retry_after:
                message = (
                    f"{self.who}: {method} {url} answered HTTP {response.status_code} asking to retry after "
                    f"{wait:.0f} s, longer than the {self.settings.max_retry_after:.0f} s a request waits"
                )
                raise self._fail(entry, message, retryable=True)
        log.warning("%s: %s attempt %s failed (%s); retrying", self.who, what, entry["attempt"], entry.get("error"))
        retry.sleep(raw)
        return retry

    @staticmethod
    def _fail(entry: dict[str, Any], message: str, *, retryable: bool) -> HttpFailure:
        entry["outcome"] = "failed"
        entry.setdefault("error", message)
        return HttpFailure(message, retryable=retryable, status=entry.get("status"))
