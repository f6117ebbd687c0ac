"""The model host's HTTP API contract: asking for a model version to be served."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.payloads import ModelName, Version


class DeploymentRequest(BaseModel):
    """``POST /v1/deployments``: serve this registry version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelName
    version: Version


class Deployment(BaseModel):
    """A version the model host serves, and the base URL the worker routes to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: ModelName
    version: Version
    port: int = Field(ge=1, le=65535)
    url: str
    pid: int | None = None
