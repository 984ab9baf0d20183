"""The `planner.llm:` block of aishell.yaml: the model that drafts plans through Ollama."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aishell.config.bounds import MAX_TIMEOUT_SECONDS
from aishell.config.checks import check_http_url
from aishell.config.fields import Integer, Number


class LlmPlannerConfig(BaseModel):
    """The model that drafts plans through Ollama; its plans pass the same validator."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # The Ollama server; null: OLLAMA_HOST, or http://127.0.0.1:11434.
    host: str | None = None
    model: str = "qwen2.5-coder:7b"
    # Drafts per request: a rejected plan goes back to the model with the reasons.
    tries: Integer = Field(3, ge=1, le=10)
    # Context window asked of the model; the prompt holds every offered tool's schema.
    context_tokens: Integer = Field(16384, ge=2048, le=2**24)
    timeout_seconds: Number = Field(
        300, gt=0, le=MAX_TIMEOUT_SECONDS, description="longest wait for one answer"
    )
    # Attempts to reach the server, with backoff, before giving up.
    connect_attempts: Integer = Field(3, ge=1, le=20)
    retry_backoff_seconds: Number = Field(1.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    max_steps: Integer = Field(100, ge=1, le=1000)
    # Accepted plans are kept in the state store by (request, catalog, model).
    cache: bool = True

    _host = field_validator("host")(check_http_url)
