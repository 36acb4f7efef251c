"""Reading what a CLI command printed, in tests run through click's CliRunner."""

from __future__ import annotations

import json
from typing import Any


def json_document(result) -> Any:
    """A `--json` command's document, from stdout alone: the command exited 0, and anything a
    library wrote to stderr meanwhile (an unclosed aiohttp session collected mid-command logs
    there) is not part of the document."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
