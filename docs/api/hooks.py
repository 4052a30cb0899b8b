"""MkDocs hooks of the documentation site (mkdocs.yml, `hooks:`).

- Repository files that a page links to outside docs/ (figures, bench results, the profiles'
  README): the pages are written to be read in the repository, so `../figures/default/F1.png` is
  a link relative to the repository tree. The build publishes each such file that exists under
  `repository/<its path>` and the link resolves to it; a link to a file that does not exist stays
  a broken link, which the strict build reports.
- Optional API modules (`extra.optional_modules` in mkdocs.yml): a `::: perinstance.x` block of
  one of them is left out while `src/perinstance/x.py` (or the package `x/`) is absent, and the
  build logs that at INFO level. Every other `:::` block renders or fails the build.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.perinstance")

PUBLISHED_DIR = "repository"
# inline links and images `[text](target "title")` and reference definitions `[id]: target`
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.I)
# `::: identifier` at the start of a line, then its indented options
_AUTODOC = re.compile(r"^:::[ \t]+(?P<id>[\w.]+)[ \t]*(?:\n|\Z)(?:(?:[ \t]+[^\n]*)?\n)*", re.M)


class _RepositoryFile(File):
    """A repository file published as it is: never a page, even a `.md` one (its own relative
    links point into the repository tree, which the site does not mirror)."""

    def is_documentation_page(self) -> bool:
        return False

    def is_static_page(self) -> bool:
        return False

    def is_media_file(self) -> bool:
        return True


def _link_targets(markdown: str) -> list[str]:
    prose = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    return _LINK.findall(prose) + _REFERENCE.findall(prose)


def on_files(files: Files, *, config: MkDocsConfig) -> Files:
    """Publish the repository files that pages link to outside docs/."""
    docs_dir = Path(config.docs_dir).resolve()
    root = Path(config.config_file_path).resolve().parent
    published: set[str] = set()
    for page_file in files.documentation_pages():
        markdown = Path(page_file.abs_src_path).read_text(encoding="utf-8")
        for target in _link_targets(markdown):
            if _EXTERNAL.match(target):
                continue
            path = target.partition("#")[0].partition("?")[0]
            if not path or path.startswith("/"):
                continue
            # the lookup key mkdocs computes for a relative link: the normalised path from docs/
            src_uri = posixpath.normpath(posixpath.join(posixpath.dirname(page_file.src_uri), path))
            if not src_uri.startswith("../") or src_uri in published:
                continue
            absolute = (docs_dir / src_uri).resolve()
            if not absolute.is_file() or not absolute.is_relative_to(root):
                continue  # mkdocs reports the broken link itself
            relative = absolute.relative_to(root).as_posix()
            files.append(
                _RepositoryFile(
                    src_uri,
                    src_dir=str(docs_dir),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                    dest_uri=f"{PUBLISHED_DIR}/{relative}",
                    # set here: mkdocs' exclusion rules would take the leading `..` for a dot-file
                    inclusion=InclusionLevel.INCLUDED,
                )
            )
            published.add(src_uri)
    if published:
        log.info("published %d repository files linked from the pages", len(published))
    return files


def _module_present(identifier: str, source_dirs: list[Path]) -> bool:
    parts = identifier.split(".")
    for source in source_dirs:
        base = source.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def on_page_markdown(markdown: str, *, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Leave out the `:::` blocks of optional modules whose source is absent."""
    optional = set(config.extra.get("optional_modules") or [])
    if not optional:
        return markdown
    root = Path(config.config_file_path).resolve().parent
    plugin = config.plugins.get("mkdocstrings")
    handler = plugin.config.handlers.get("python", {}) if plugin is not None else {}
    # mkdocstrings' own default: the directory of mkdocs.yml
    source_dirs = [root / p for p in handler.get("paths", ["."])]

    def keep_or_drop(match: re.Match[str]) -> str:
        identifier = match.group("id")
        if identifier in optional and not _module_present(identifier, source_dirs):
            log.info(
                "%s: %s is absent from %s, its section is left out",
                page.file.src_uri,
                identifier,
                ", ".join(str(d) for d in source_dirs),
            )
            return ""
        return match.group(0)

    return _AUTODOC.sub(keep_or_drop, markdown)
