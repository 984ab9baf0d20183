"""Talking to an Ollama server with the official client: retries, and one-line errors."""

from __future__ import annotations

import functools
import json
import os
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aishell.config.checks import check_http_url
from aishell.config.llm import LlmPlannerConfig
from aishell.errors import ConfigError, PlannerUnavailable
from aishell.units import exact

DEFAULT_HOST = "http://127.0.0.1:11434"
# Answers a server gives while it loads a model or is overloaded: worth another try.
_RETRY_STATUS = {502, 503, 504}
# The longest wait between tries, however many there are.
_MAX_WAIT_SECONDS = 30.0


def resolve_host(settings: LlmPlannerConfig) -> tuple[str, str]:
    """The server's address and where it came from, for errors that say what to change."""
    if settings.host:
        return settings.host, "planner.llm.host"
    if os.environ.get("OLLAMA_HOST"):
        # Checked as planner.llm.host is: a value the client cannot take is the
        # variable's to fix, in one line that does not repeat it (it may hold a token).
        try:
            return str(check_http_url(os.environ["OLLAMA_HOST"])), "OLLAMA_HOST"
        except ValueError as exc:
            raise ConfigError(f"OLLAMA_HOST: {exc}") from None
    return DEFAULT_HOST, "the default; set OLLAMA_HOST"


def shown_host(host: str) -> str:
    """The address without a password, with its scheme."""
    url = host if "://" in host else f"http://{host}"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class OllamaChat:
    """One model on one server, asked for JSON in a given schema at temperature 0."""

    def __init__(
        self,
        settings: LlmPlannerConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.model = settings.model
        self.host, self.host_from = resolve_host(settings)
        # Imported here: a plan by the rules never needs them (0.15 s of start).
        import ollama

        # No redirect is followed: each request carries the catalog's tables and the
        # job, which go to the server configured, never to one it names.
        self._client = ollama.Client(
            host=self.host,
            timeout=settings.timeout_seconds,
            verify=_tls_context(),
            follow_redirects=False,
        )
        self._sleep = sleep

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves it untyped

    def models(self) -> list[str]:
        """The models the server has, by name."""
        listing = self._call(self._client.list)
        return sorted(m.model for m in listing.models if m.model)

    def check_model(self) -> list[str]:
        """The server answers and has the model (the models it has are returned);
        otherwise a one-line error saying what to do."""
        names = self.models()
        wanted = self.model if ":" in self.model else f"{self.model}:latest"
        if self.model not in names and wanted not in names:
            have = ", ".join(names) or "no models"
            raise PlannerUnavailable(
                f"The Ollama server at {shown_host(self.host)} has no model '{self.model}' "
                f"(it has: {have}); run `ollama pull {self.model}` there, or name another "
                "model in planner.llm.model"
            )
        return names

    def chat(self, messages: Sequence[dict[str, str]], answer_schema: dict[str, Any]) -> str:
        """The model's answer text to the conversation so far."""
        response = self._call(
            lambda: self._client.chat(
                model=self.model,
                messages=list(messages),
                format=answer_schema,
                stream=False,
                options={
                    "temperature": 0,
                    "seed": 0,
                    "num_ctx": self.settings.context_tokens,
                },
            ),
            drafting=True,
        )
        return response.message.content or ""

    def _not_ollama(self, exc: Exception) -> str:
        why = _clipped(_first_line(str(exc))) or type(exc).__name__
        return (
            f"The server at {shown_host(self.host)} ({self.host_from}) answered what is not "
            f"the Ollama API ({why}); point OLLAMA_HOST (or planner.llm.host) at an Ollama "
            "server"
        )

    def _no_answer(self, drafting: bool) -> str:
        waited = f"{exact(self.settings.timeout_seconds)} s"
        if drafting:
            return (
                f"The model {self.model} at {shown_host(self.host)} gave no answer within "
                f"{waited}; raise planner.llm.timeout_seconds or choose a smaller model"
            )
        return (
            f"The server at {shown_host(self.host)} ({self.host_from}) did not list its models "
            f"within {waited}; check that Ollama runs there and is reachable from here, or "
            "point OLLAMA_HOST (or planner.llm.host) at one"
        )

    def _call(self, request: Callable[[], Any], drafting: bool = False) -> Any:
        import httpx
        import ollama

        # Imported here as the client is: a plan by the rules never retries a model.
        from aishell.retry.deadline import Late, within
        from aishell.retry.policy import Backoff, retrying

        tries = 0

        def attempt() -> Any:
            nonlocal tries
            tries += 1
            try:
                # The timeout bounds the whole answer, not only each wait for a byte: a
                # server (or a proxy) that drips it would hold the command for good.
                return within(self.settings.timeout_seconds, request, self.close)
            except (httpx.ReadTimeout, Late):
                # Asking again would not help: the model is slow, or nothing at the
                # address answers (one that drops every connection is waited for whole).
                raise PlannerUnavailable(self._no_answer(drafting)) from None
            except ollama.ResponseError as exc:
                if 300 <= exc.status_code < 400:
                    raise PlannerUnavailable(
                        f"The server at {shown_host(self.host)} sent the request on elsewhere "
                        f"(HTTP {exc.status_code}), which is not followed: point OLLAMA_HOST "
                        "(or planner.llm.host) at the Ollama server itself"
                    ) from None
                if exc.status_code not in _RETRY_STATUS:
                    raise PlannerUnavailable(
                        f"The Ollama server at {shown_host(self.host)} refused the request "
                        f"(HTTP {exc.status_code}): {_said(exc.error)}"
                    ) from None
                raise
            except (ValueError, TypeError, AttributeError) as exc:
                # The client could not read the answer as Ollama's (JSON of its shape):
                # another service at the address, or a proxy's page. Asking again would
                # not help.
                raise PlannerUnavailable(self._not_ollama(exc)) from None

        backoff = Backoff(
            first_wait=self.settings.retry_backoff_seconds,
            max_wait=_MAX_WAIT_SECONDS,
            attempts=self.settings.connect_attempts,
        )
        worth = (ConnectionError, httpx.TransportError, ollama.ResponseError)
        try:
            return retrying(backoff, on_error=lambda e: isinstance(e, worth), sleep=self._sleep)(
                attempt
            )
        except worth as exc:
            why = _reason(exc)
        tries_said = f"after {tries} {'try' if tries == 1 else 'tries'}"
        raise PlannerUnavailable(
            f"No answer from an Ollama server at {shown_host(self.host)} ({self.host_from}) "
            f"{tries_said}: {why}; start one with `ollama serve`, or point OLLAMA_HOST "
            "(or planner.llm.host) at one"
        )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: loading the CA bundle takes
    about 25 ms, which every client would otherwise pay (a scheduler drafts every run)."""
    import httpx

    return httpx.create_ssl_context()


def _reason(exc: BaseException) -> str:
    import httpx
    import ollama

    if isinstance(exc, ollama.ResponseError):
        return f"HTTP {exc.status_code}: {_said(exc.error)}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, ConnectionError):
        return "connection refused or unreachable"
    return _first_line(str(exc)) or type(exc).__name__


def _first_line(text: str) -> str:
    text = (text or "").strip()
    return text.splitlines()[0] if text else ""


def _said(error: object) -> str:
    """What a server's error said (text, or whatever JSON it gave), or that it said
    nothing (a proxy's bare 404)."""
    said = _first_line(error if isinstance(error, str) else json.dumps(error, default=str))
    return _clipped(said) or "the server gave no reason"


def _clipped(text: str, width: int = 200) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
