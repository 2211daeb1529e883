"""A legacy ChatAgent logged from code and served with `mlflow models serve`.

Answers `echo: <last user text>`; raises when the text contains `FAIL`.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse, ChatContext


class EchoChatAgent(ChatAgent):
    def predict(
        self,
        messages: list[ChatAgentMessage],
        context: ChatContext | None = None,
        custom_inputs: dict[str, Any] | None = None,
    ) -> ChatAgentResponse:
        text = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
        if "FAIL" in text:
            raise RuntimeError(f"agent failed on purpose for: {text}")
        return ChatAgentResponse(
            messages=[ChatAgentMessage(role="assistant", content=f"echo: {text}", id="msg_3")],
            custom_outputs=custom_inputs,
        )


mlflow.models.set_model(EchoChatAgent())
