"""The API's request and response bodies. Requests refuse unknown fields and check their
strings (run ids, agent names, sizes); responses are what the OpenAPI document promises."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentView",
    "ApprovalDecision",
    "ApprovalDenial",
    "ApprovalView",
    "BudgetTopUp",
    "ContextMessage",
    "ContextView",
    "EventView",
    "EventsPage",
    "ForkRequest",
    "KeyView",
    "ReplayView",
    "RunCreate",
    "RunList",
    "RunView",
    "SignalRequest",
    "TenantBudgetView",
    "TenantTopUp",
    "UsageView",
]

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
RunId = Annotated[str, Field(pattern=RUN_ID, description="1-128 letters, digits, . _ : -")]
AgentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
MAX_GOAL_CHARS = 20_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RunCreate(_Request):
    agent: AgentName = Field(description="the name of an agent this server serves")
    goal: str = Field(min_length=1, description=f"what to do (at most {MAX_GOAL_CHARS} chars)")
    run_id: RunId | None = Field(default=None, description="choose the run's id (optional)")


class ForkRequest(_Request):
    at_seq: int = Field(ge=1, le=2**62, description="the last event the fork shares")
    run_id: RunId | None = Field(default=None, description="the fork's id (optional)")


class SignalRequest(_Request):
    name: str = Field(min_length=1, max_length=200)
    data: Any = None


class ApprovalDecision(_Request):
    args: dict[str, Any] | None = Field(
        default=None, description="approve with these arguments instead of the requested ones"
    )


class ApprovalDenial(_Request):
    reason: str = Field(default="", max_length=2000, description="shown to the model")


class BudgetTopUp(_Request):
    cost_usd: float | None = Field(default=None, gt=0, le=1e9)
    tokens: int | None = Field(default=None, gt=0, le=2**62)
    wall_s: float | None = Field(default=None, gt=0, le=1e9)
    model_calls: int | None = Field(default=None, gt=0, le=2**62)
    tool_calls: int | None = Field(default=None, gt=0, le=2**62)


class TenantTopUp(_Request):
    cost_usd: float | None = Field(default=None, gt=0, le=1e9)
    tokens: int | None = Field(default=None, gt=0, le=2**62)


class TenantBudgetView(BaseModel):
    tenant: str
    limits: dict[str, float] = Field(description="empty: the tenant has no budget")
    spent: dict[str, float]
    held: dict[str, float] = Field(description="what its unfinished runs hold, in all")
    remaining: dict[str, float]


class UsageView(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class RevealedView(BaseModel):
    """A run's goal and answer with the values behind its PII placeholders restored."""

    run_id: str
    goal: str
    answer: str | None


class RunView(BaseModel):
    run_id: str
    agent: str
    goal: str
    status: str
    tenant: str | None
    created_at: float
    updated_at: float
    events: int = Field(description="the seq of its last event")
    parent_run_id: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    waiting_for: str | None = None
    answer: str | None = None
    error: str | None = None
    usage: UsageView | None = None
    cost: float | None = None
    model_calls: int | None = None
    pending_approvals: int | None = None


class RunList(BaseModel):
    runs: list[RunView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class EventView(BaseModel):
    model_config = ConfigDict(extra="allow")
    seq: int
    ts: float
    type: str


class EventsPage(BaseModel):
    events: list[EventView]
    last_seq: int = Field(description="the run's last event when this page was read")


class ContextMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str = ""
    estimated_tokens: int


class ContextView(BaseModel):
    at: int = Field(description="the seq of the model call")
    messages: list[ContextMessage]
    estimated_tokens: int = Field(description="about 4 characters a token")


class ApprovalView(BaseModel):
    run_id: str
    action_id: str
    call_id: str
    tool: str
    args: dict[str, Any]
    rationale: str
    reason: str
    digest: str


class ReplayView(BaseModel):
    run_id: str
    ok: bool
    detail: str


class AgentView(BaseModel):
    name: str
    model: str
    tools: list[str]


class KeyView(BaseModel):
    id: str
    name: str
    tenant: str
    scopes: list[str]
    expires_at: float | None
