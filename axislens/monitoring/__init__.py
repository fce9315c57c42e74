"""Drift monitoring: transcripts, one-pass per-token projections of a conversation onto the axis,
and live chat sessions with a conditional cap.
"""

from __future__ import annotations

from axislens.monitoring.projection import (
    DriftTrajectory,
    Transcript,
    TranscriptError,
    TurnProjection,
    check_conversation,
    load_transcript,
    project_conversation,
)
from axislens.monitoring.scripts import (
    builtin_conversation,
    load_script,
    shipped_conversations,
)
from axislens.monitoring.session import (
    ChatSession,
    EngageRule,
    TurnReport,
    chat_session,
)

__all__ = [
    "ChatSession",
    "DriftTrajectory",
    "EngageRule",
    "Transcript",
    "TranscriptError",
    "TurnProjection",
    "TurnReport",
    "builtin_conversation",
    "chat_session",
    "check_conversation",
    "load_script",
    "load_transcript",
    "project_conversation",
    "shipped_conversations",
]
