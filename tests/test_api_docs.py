"""The documentation site (mkdocs.yml): it builds with --strict, its API reference renders the
signatures the sources declare, every module of the package has a section, and the site's hooks
(docs/api/hooks.py) publish linked repository files and skip only absent optional modules."""

from __future__ import annotations

import ast
import html
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src/perinstance"
API_DIR = REPO / "docs/api"
HOOKS = API_DIR / "hooks.py"
BUILD_TIMEOUT_S = 300

# (module, function, page of the API reference that renders it)
KEY_FUNCTIONS = [
    ("perinstance.privacy", "per_instance_rdp", "api/privacy"),
    ("perinstance.pergrad", "loss_backward_with_norms", "api/training"),
    ("perinstance.data", "load_dataset", "api/data-models"),
    ("perinstance.theory", "predicted_unlearning_steps", "api/unlearning"),
    ("perinstance.evaluation", "steps_to_unlearn", "api/unlearning"),
    ("perinstance.groups", "build_groups", "api/proxies-groups"),
    ("perinstance.config", "load_config", "api/plumbing"),
]
AUTODOC = re.compile(r"^:::[ \t]+([\w.]+)", re.M)
TAG = re.compile(r"<[^>]+>")
DOTTED_PREFIX = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    try:
        import mkdocstrings  # noqa: F401
    except ImportError:
        pytest.fail("mkdocs/mkdocstrings are missing: install the test extra, pip install -e '.[test]'")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict"]
    command += ["--config-file", str(config), "--site-dir", str(site)]
    return subprocess.run(command, cwd=config.parent, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)


def _problems(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).splitlines()
    flagged = [line for line in lines if re.match(r"\s*(WARNING|ERROR)\b", line)]
    return "\n".join(flagged or lines[-30:])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _mkdocs_build(REPO / "mkdocs.yml", out)
    assert result.returncode == 0, (
        f"`mkdocs build --strict` of mkdocs.yml failed (exit {result.returncode}); a griffe warning "
        f"names the docstring to fix:\n{_problems(result)}"
    )
    return out


def _text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(TAG.sub("", fragment)).split())


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    tail = "".join(current).strip()
    return [p for p in [*parts, tail] if p]


def _norm(expression: str | None) -> str | None:
    """An annotation or default compared up to module prefixes, spacing and quote style."""
    if expression is None:
        return None
    return DOTTED_PREFIX.sub("", expression.replace("'", '"')).replace(" ", "")


def _parse_rendered(signature: str) -> tuple[str, list[tuple[str, str | None, str | None]], str | None]:
    """`name(p: A = d, *, q: B) -> R` as (name, [(param, annotation, default)], return)."""
    name, _, rest = signature.partition("(")
    depth, end = 1, None
    for i, char in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            end = i
            break
    assert end is not None, f"unbalanced rendered signature: {signature!r}"
    params = []
    for part in _split_top_level(rest[:end]):
        head, _, default = part.partition("=")
        param, _, annotation = head.partition(":")
        params.append((param.strip(), _norm(annotation.strip() or None), _norm(default.strip() or None)))
    returns = rest[end + 1 :].strip()
    return name.strip(), params, _norm(returns.removeprefix("->").strip() or None)


def _declared(module: str, function: str):
    """The signature and docstring summary as the source file declares them (ast, no griffe)."""
    path = PACKAGE / f"{module.rsplit('.', 1)[1]}.py"
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    node = next(
        (
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == function
        ),
        None,
    )
    assert node is not None, f"{path.relative_to(REPO)} defines no top-level function {function}"

    def expression(value: ast.expr | None) -> str | None:
        return None if value is None else _norm(ast.get_source_segment(source, value))

    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = []
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        params.append((arg.arg, expression(arg.annotation), expression(default)))
        if args.posonlyargs and i == len(args.posonlyargs) - 1:
            params.append(("/", None, None))
    if args.vararg is not None:
        params.append(("*" + args.vararg.arg, expression(args.vararg.annotation), None))
    elif args.kwonlyargs:
        params.append(("*", None, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append((arg.arg, expression(arg.annotation), expression(default)))
    if args.kwarg is not None:
        params.append(("**" + args.kwarg.arg, expression(args.kwarg.annotation), None))
    docstring = ast.get_docstring(node) or ""
    summary = " ".join(docstring.split("\n\n", 1)[0].split())
    return params, expression(node.returns), summary


def _section(page_html: str, object_id: str) -> str:
    start = page_html.find(f'id="{object_id}"')
    assert start >= 0, f"no section with id {object_id!r} on the page"
    # the next heading of any object ends this one's section (its own heading tag is skipped)
    following = page_html.find('class="doc doc-heading"', page_html.find(">", start))
    return page_html[start : following if following > 0 else len(page_html)]


def _without_markup(text: str) -> str:
    return " ".join(re.sub(r"[`*_\\]", "", text).split())


@pytest.mark.parametrize(("module", "function", "page"), KEY_FUNCTIONS, ids=lambda v: str(v))
def test_api_page_renders_the_declared_signature(site, module, function, page):
    page_html = (site / page / "index.html").read_text(encoding="utf-8")
    object_id = f"{module}.{function}"
    section = _section(page_html, object_id)
    match = re.search(r'<div class="doc-signature[^"]*">(.*?)</div>', section, re.S)
    assert match, f"{page}: {object_id} is rendered without a signature block"
    name, rendered, returns = _parse_rendered(_text(match.group(1)))
    params, declared_returns, summary = _declared(module, function)
    assert name == function
    assert [p[0] for p in rendered] == [p[0] for p in params], f"{object_id}: parameters differ"
    assert rendered == params, f"{object_id}: annotations or defaults differ from the source"
    assert returns == declared_returns
    assert summary, f"{object_id} has no docstring"
    assert _without_markup(summary) in _without_markup(_text(section)), (
        f"{page}: the docstring summary of {object_id} is not rendered"
    )


def test_signature_parsing_matches_a_hand_written_case():
    name, params, returns = _parse_rendered(
        "f( x: np.ndarray, /, y: dict[str, int] = {'a': 1}, *, z: float | None = None ) -> torch.Tensor"
    )
    assert name == "f"
    assert params == [
        ("x", "ndarray", None),
        ("/", None, None),
        ("y", "dict[str,int]", '{"a":1}'),
        ("*", None, None),
        ("z", "float|None", "None"),
    ]
    assert returns == "Tensor"


def _package_modules() -> set[str]:
    names = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__"}}
    names |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    return {f"perinstance.{name}" for name in names}


def _documented_modules() -> dict[str, str]:
    blocks = {}
    for page in sorted(API_DIR.glob("*.md")):
        for identifier in AUTODOC.findall(page.read_text(encoding="utf-8")):
            blocks[identifier] = page.name
    return blocks


def _config() -> dict:
    return yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))


def test_every_module_of_the_package_has_an_api_section(site):
    documented = _documented_modules()
    missing = sorted(_package_modules() - set(documented))
    assert not missing, f"modules without a `::: module` block on a docs/api/*.md page: {missing}"
    optional = set(_config()["extra"]["optional_modules"])
    assert optional <= set(documented), f"optional modules without a section: {optional - set(documented)}"
    present = _package_modules()
    for identifier, page in documented.items():
        if identifier not in present:
            assert identifier in optional, f"docs/api/{page}: {identifier} is not a module of the package"
            continue
        rendered = (site / "api" / Path(page).stem / "index.html").read_text(encoding="utf-8")
        assert f'id="{identifier}"' in rendered, f"docs/api/{page}: {identifier} was not rendered"


def test_nav_lists_every_page():
    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    nav = list(pages(_config()["nav"]))
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert len(nav) == len(set(nav)), f"a page is listed twice in the nav: {nav}"
    assert set(nav) == on_disk, (
        f"nav of mkdocs.yml vs docs/: not listed {sorted(on_disk - set(nav))}, "
        f"listed but absent {sorted(set(nav) - on_disk)}"
    )


def test_pages_show_repository_figures(site):
    page = (site / "results" / "index.html").read_text(encoding="utf-8")
    sources = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert sources, "the results page shows no figure"
    for src in sources:
        target = (site / "results" / src).resolve()
        assert target.is_file(), f"results page: image {src} is not in the built site"
        published = target.relative_to(site.resolve() / "repository")
        assert target.read_bytes() == (REPO / published).read_bytes()


# A toy project for the hooks: a package with a documented function, pages that link outside docs/.
TOY_FUNCTION = '''
def scale(x: float, factor: float = 2.0) -> float:
    """x times factor.

    Args:
        x: the value.
        {name}: the multiplier.
    """
    return x * factor
'''


def _toy(tmp_path: Path, *, page: str, param_name: str = "factor") -> Path:
    (tmp_path / "src/toy").mkdir(parents=True)
    (tmp_path / "src/toy/__init__.py").write_text('"""Toy package."""\n')
    (tmp_path / "src/toy/core.py").write_text(
        '"""Core."""\n' + TOY_FUNCTION.replace("{name}", param_name), encoding="utf-8"
    )
    (tmp_path / "src/toy/extra.py").write_text('"""Extra, an optional module that exists."""\n')
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures/plot.png").write_bytes(b"\x89PNG toy bytes")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/README.md").write_text("# Notes\n[a link into the repository](../src/toy/core.py)\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/index.md").write_text(page, encoding="utf-8")
    config = {
        "site_name": "toy",
        "strict": True,
        "hooks": [str(HOOKS)],
        "plugins": [{"mkdocstrings": {"handlers": {"python": {"paths": ["src"]}}}}],
        "extra": {"optional_modules": ["toy.absent", "toy.extra"]},
    }
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


TOY_PAGE = textwrap.dedent(
    """\
    # Toy

    ![plot](../figures/plot.png) and [the notes](../notes/README.md).

    ::: toy.core

    ::: toy.absent
        options:
          show_root_heading: true

    Text after the absent module.

    ::: toy.extra
    """
)


def test_hooks_publish_linked_files_and_skip_absent_optional_modules(tmp_path):
    config = _toy(tmp_path, page=TOY_PAGE)
    result = _mkdocs_build(config, tmp_path / "site")
    assert result.returncode == 0, _problems(result)
    page = (tmp_path / "site/index.html").read_text(encoding="utf-8")
    assert 'src="repository/figures/plot.png"' in page
    assert 'href="repository/notes/README.md"' in page
    assert (tmp_path / "site/repository/figures/plot.png").read_bytes() == b"\x89PNG toy bytes"
    assert (tmp_path / "site/repository/notes/README.md").read_text().startswith("# Notes")
    assert not (tmp_path / "site/repository/notes/index.html").exists(), "a linked .md became a page"
    assert 'id="toy.core.scale"' in page
    assert 'id="toy.extra"' in page, "an optional module that exists was left out"
    assert "toy.absent" not in page
    assert "Text after the absent module." in page
    assert "toy.absent is absent" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("case", "page", "param_name", "named"),
    [
        pytest.param(case, page, param, named, id=case)
        for case, page, param, named in [
            ("missing module", "# Toy\n\n::: toy.missing\n", "factor", "toy.missing"),
            ("docstring names no parameter", "# Toy\n\n::: toy.core\n", "facter", "facter"),
            ("broken repository link", "# Toy\n\n![none](../figures/none.png)\n", "factor", "none.png"),
        ]
    ],
)
def test_strict_build_fails_on(tmp_path, case, page, param_name, named):
    config = _toy(tmp_path, page=page, param_name=param_name)
    result = _mkdocs_build(config, tmp_path / "site")
    assert result.returncode != 0, f"{case}: the strict build passed"
    assert named in result.stdout + result.stderr, f"{case}: the build output does not name {named!r}"
