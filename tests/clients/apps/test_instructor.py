"""instructor on the OpenAI client, in JSON_SCHEMA and TOOLS modes, with bounded fields."""

from __future__ import annotations

import instructor
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field
from recording import RecordingProxy


class Ticket(BaseModel):
    priority: int = Field(ge=1, le=4, description="1 is the most urgent")
    minutes_estimate: int = Field(ge=5, le=480)
    team: str = Field(pattern=r"^(billing|network|accounts)$")


@pytest.mark.parametrize("mode", [instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS], ids=["json_schema", "tools"])
def test_bounded_model_in_each_mode(proxy: RecordingProxy, base_url: str, mode: instructor.Mode) -> None:
    client = instructor.from_openai(OpenAI(base_url=base_url, api_key="sk-test"), mode=mode)
    since = len(proxy.requests)
    ticket = client.chat.completions.create(
        model="gpt-4o-mini", response_model=Ticket, max_retries=0, temperature=0, max_tokens=80,
        messages=[{"role": "user", "content": "My internet has been down since this morning. File a ticket."}])
    assert isinstance(ticket, Ticket)
    assert 1 <= ticket.priority <= 4 and 5 <= ticket.minutes_estimate <= 480
    assert ticket.team in ("billing", "network", "accounts")
    [sent] = proxy.chat_bodies(since)  # held by the gateway on the first try: no retry was needed
    if mode is instructor.Mode.JSON_SCHEMA:
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "Ticket"}}
