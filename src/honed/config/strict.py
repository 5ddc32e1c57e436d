"""The base of every recipe section: unknown keys are errors, so a typo never passes silently."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A recipe section: `extra="forbid"` (config.load adds the "did you mean")."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
