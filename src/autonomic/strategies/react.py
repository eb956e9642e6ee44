"""ReAct: think, call tools, observe, repeat, answer.

The model sees the instructions, the goal and every turn so far. When it asks for tools
they run (concurrently when it asks for several) and their observations go back to it;
when it answers in plain text, that text is the run's answer.
"""

from __future__ import annotations

from autonomic.messages import Message, ModelRequest
from autonomic.state import RunState
from autonomic.steps import Fail, Finish, ModelCall, Step, ToolCalls
from autonomic.strategies.base import AgentView

__all__ = ["ReAct"]

EMPTY_REPLY_NUDGE = (
    "Your last reply was empty. Reply with the final answer, or call one of the tools."
)


class ReAct:
    name = "react"

    def next_step(self, state: RunState, agent: AgentView) -> Step:
        if state.malformed_streak >= agent.max_malformed:
            return Fail(
                f"the model returned malformed output {state.malformed_streak} times in a row "
                f"(last: {state.last_malformed})"
            )
        last = state.messages[-1]
        if last.role == "assistant":
            if last.tool_calls:
                return ToolCalls(last.tool_calls, rationale=last.content)
            if last.content.strip():
                return Finish(last.content)
            return self._model_call(state, agent, nudge=EMPTY_REPLY_NUDGE)
        return self._model_call(state, agent)

    @staticmethod
    def _model_call(state: RunState, agent: AgentView, nudge: str | None = None) -> ModelCall:
        messages = [Message(role="system", content=agent.instructions), *state.messages]
        if nudge:
            messages.append(Message(role="user", content=nudge))
        return ModelCall(ModelRequest(messages=tuple(messages), tools=agent.tools))
