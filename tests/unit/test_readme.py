"""The README a newcomer reads first: its first commands are the two the guide names, it links
every doc, and every file it links exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_the_first_commands_are_the_demo_and_the_tests() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]


def test_every_doc_is_linked_and_every_link_resolves() -> None:
    links = set(re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README))
    local = {link for link in links if not re.match(r"[a-z]+://", link)}
    assert {f"docs/{doc.name}" for doc in (ROOT / "docs").glob("*.md")} <= local
    missing = sorted(link for link in local if not (ROOT / link).exists())
    assert not missing, missing
