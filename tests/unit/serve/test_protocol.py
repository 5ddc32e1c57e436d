"""Request types: content parts that are not text are refused with a ValueError (a 400), never a crash."""

from __future__ import annotations

import pytest

from honed.serve.protocol import ChatMessage


def test_text_parts_join_into_the_message_text() -> None:
    message = ChatMessage(role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert message.text() == "ab"


def test_a_part_without_a_type_beside_an_image_is_refused_by_name() -> None:
    message = ChatMessage(role="user", content=[{"text": "a"}, {"type": "image_url"}])
    with pytest.raises(ValueError, match=r"only text content parts are supported, not \[None, 'image_url'\]"):
        message.text()
