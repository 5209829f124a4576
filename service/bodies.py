"""Request bodies the service accepts, validated before any handler runs.

Unknown fields are accepted and ignored (newer SDKs add fields); wrong types
and missing required fields produce a 422 naming the field. Content checks
that need more than types (serialized code, packed payloads) live in the
route modules.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionRegistration(_Body):
    function_name: str = Field(min_length=1, max_length=256)
    function_code: str = Field(min_length=1)
    serialized: bool = True
    description: str | None = None
    public: bool = False
    meta: dict = Field(default_factory=dict)
    group: uuid.UUID | None = None
    ha_endpoint_id: uuid.UUID | None = None


class EndpointRegistration(_Body):
    endpoint_name: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    multi_user: bool = False
    public: bool = False
    high_assurance: bool = False
    metadata: dict = Field(default_factory=dict)
    allowed_functions: list[uuid.UUID] = Field(default_factory=list)
    authentication_policy: uuid.UUID | None = None
    subscription_uuid: uuid.UUID | None = None
    admins: list[uuid.UUID] = Field(default_factory=list)


class Submission(_Body):
    tasks: dict[uuid.UUID, list[str]] = Field(min_length=1)
    task_group_id: uuid.UUID | None = None
    create_queue: bool = False
    user_endpoint_config: dict | None = None
    resource_specification: dict | None = None
    result_serializers: list[str] | None = None
    user_runtime: dict | None = None


class BatchStatus(_Body):
    task_ids: list[uuid.UUID] = Field(max_length=10000)
