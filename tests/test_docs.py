"""The documentation cannot go stale silently: its relative links resolve, and docs/reference.md names
every config group and option under conf/."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REFERENCE = ROOT / "docs" / "reference.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(text: str) -> str:
    """The text without fenced code blocks, whose brackets are code, not links or headings."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeated headings numbered as GitHub numbers them."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


def sections(path: Path) -> dict[str, str]:
    """Each heading's text (backticks, '=' and '/' stripped) mapped to the text below it."""
    out: dict[str, str] = {}
    name = ""
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = HEADING.match(line)
        if match:
            name = match.group(2).strip("`=/ ")
            out[name] = ""
        elif name:
            out[name] += line + "\n"
    return out


def relative_links(path: Path) -> list[str]:
    """The links of a page that point into the repository (no scheme, no mail)."""
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file, or heading in that file, does not exist."""
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_slug_matches_github_anchors() -> None:
    assert slug("Distributed training (DDP)") == "distributed-training-ddp"
    assert slug("FER2013 recipe (in progress)") == "fer2013-recipe-in-progress"
    assert slug("`hparams_search`") == "hparams_search"


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Part\n## Part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n[a](#top) [b](other.md#part-1) [c](https://x.org/y.md) [d](missing.md) [e](other.md#nope)\n"
        "```\n[code](in-a-fence.md)\n```\n"
    )
    assert broken_links(page) == [
        f"missing.md: no file {tmp_path / 'missing.md'}",
        "other.md#nope: no heading #nope in other.md",
    ]


def config_groups() -> dict[str, list[str]]:
    """Every folder under conf/ holding YAML files, with its options (the file stems)."""
    return {
        folder.relative_to(CONF).as_posix(): sorted(p.stem for p in folder.glob("*.yaml"))
        for folder in sorted(CONF.rglob("*"))
        if folder.is_dir() and any(folder.glob("*.yaml"))
    }


def test_conf_has_groups_to_document() -> None:
    groups = config_groups()
    assert "model" in groups and "resnet18" in groups["model"]


@pytest.mark.parametrize("group", sorted(config_groups()))
def test_reference_lists_every_option_of_a_group(group: str) -> None:
    text = sections(REFERENCE)
    assert group in text, f"docs/reference.md has no section for conf/{group}/: add '### `{group}`'"
    missing = [o for o in config_groups()[group] if f"`{o}`" not in text[group]]
    assert not missing, f"docs/reference.md, section `{group}`: options {missing} of conf/{group}/ not listed"


def test_reference_lists_every_command_config() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    missing = [p.name for p in sorted(CONF.glob("*.yaml")) if f"conf/{p.name}" not in text]
    assert not missing, f"docs/reference.md does not name {missing}"
