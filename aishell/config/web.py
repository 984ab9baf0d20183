"""The `web:` block of aishell.yaml: where the token of `aishell serve --http` comes from.

The token itself is never a value of the config (which is shared, backed up and shown
by `aishell doctor`): it comes from an environment variable or from a file of its own,
as a target's password comes from `password_env`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from aishell.config.checks import check_secret_env_name


class WebConfig(BaseModel):
    """Where the token a request from another host must present is read from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # The variable that holds the token (AISHELL_WEB_TOKEN, say).
    token_env: str | None = None
    # Or a file holding it alone (relative paths are under the home), readable by its
    # owner alone.
    token_file: str | None = None

    _token_env = field_validator("token_env")(check_secret_env_name)

    @model_validator(mode="after")
    def _one_source(self) -> WebConfig:
        if self.token_env and self.token_file:
            raise ValueError("give token_env or token_file, not both")
        return self
