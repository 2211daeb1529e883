"""A ResponsesAgent logged from code and served with `mlflow models serve`.

Answers `echo: <last user text>`; raises when the text contains `FAIL`.
"""

from __future__ import annotations

from collections.abc import Generator

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import (
    ResponsesAgentRequest,
    ResponsesAgentResponse,
    ResponsesAgentStreamEvent,
)

ITEM_ID = "msg_conformance_2"


def _last_user_text(request: ResponsesAgentRequest) -> str:
    text = ""
    for message in request.input:
        data = message.model_dump()
        if data.get("role") == "user" and isinstance(data.get("content"), str):
            text = data["content"]
    return text


class EchoResponsesAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = _last_user_text(request)
        if "FAIL" in text:
            raise RuntimeError(f"agent failed on purpose for: {text}")
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(f"echo: {text}", ITEM_ID)],
            custom_outputs=request.custom_inputs,
        )

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        text = f"echo: {_last_user_text(request)}"
        yield ResponsesAgentStreamEvent(**self.create_text_delta(text, ITEM_ID))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text, ITEM_ID)
        )


mlflow.models.set_model(EchoResponsesAgent())
