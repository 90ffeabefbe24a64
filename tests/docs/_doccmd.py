"""Read the commands of a docs page and match their output (the conventions
are in docs/index.md, "Commands on these pages are tested").

A page is parsed into :class:`Block` objects, in page order: every
```` ```console ```` block, and every other code block with a ``file=``
directive (the harness writes it to that file, as the reader would).

In a console block ``$ `` starts a command (a line ending in ``\\``
continues it); the lines after it, up to the next ``$ `` or the block's end,
are its expected output.  Lines starting with ``#`` are comments.  ``a$ ``
(``a# `` as root) starts a command on host ``a`` of a multi-host page (the
test runs it in a "host" made of namespaces).  A trailing ``  # comment`` on
a command line is a comment.  A block may be indented (in a list item): its
fence's indent is taken off its lines.

Directives are HTML comments right before the block (blank lines allowed
between), ``<!-- docs-test: ITEM; ITEM ... -->``, each ITEM ``name``,
``name=value`` or ``skip: reason`` (the reason runs to the comment's end).
An ITEM may start with a command's number in the block (``3 skip: ...``):
it then applies to that command only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DIRECTIVE = re.compile(r'^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$')
#: ``$ cmd``, or ``a$ cmd`` (``a# cmd`` as root) for a command on host ``a``
PROMPT = re.compile(r'^(?:(?P<host>[a-z][\w-]*)[$#]|\$)(?: |$)')
FENCE = re.compile(r'^(?P<indent> *)(?P<fence>```+)\s*(?P<lang>[\w+-]*)')
#: directives a block may carry (anything else is a typo: an error)
KNOWN = {
    'skip',
    'background',
    'timeout',
    'cwd',
    'env',
    'exit',
    'file',
    'local-index',
    'needs',
}
#: (where, reason) of every block or command the harness did not run, for
#: the run's summary
SKIPPED: list[tuple[str, str]] = []


class DocSyntaxError(ValueError):
    """A block or directive the harness cannot read."""


@dataclass
class Command:
    """One ``$ `` command of a console block."""

    number: int  # 1-based within its block
    line: int  # the page's line number of its ``$``
    cmd: str
    expected: list[str] = field(default_factory=list)
    #: ``a`` for ``a$ cmd``: a command on host a of a multi-host page
    host: str = ''
    directives: dict[str, str] = field(default_factory=dict)


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f'{self.page}:{self.line}'


def parse_directives(body: str, where: str) -> dict[int, dict[str, str]]:
    """``{0: block directives, n: directives of command n}``."""
    out: dict[int, dict[str, str]] = {}
    rest = body
    while rest.strip():
        rest = rest.strip()
        m = re.match(r'(?:(?P<num>\d+)\s+)?(?P<name>[a-z-]+)', rest)
        if not m:
            raise DocSyntaxError(f'{where}: cannot read directive {rest!r}')
        num, name = int(m['num'] or 0), m['name']
        if name not in KNOWN:
            raise DocSyntaxError(
                f'{where}: unknown directive {name!r} (known: {", ".join(sorted(KNOWN))})'
            )
        rest = rest[m.end() :]
        if name == 'skip':
            if not rest.startswith(':') or not rest[1:].strip():
                raise DocSyntaxError(f'{where}: `skip: <reason>` needs a reason')
            value, rest = rest[1:].strip(), ''
        elif rest.startswith('='):
            value, _, rest = rest[1:].partition(';')
            value = value.strip()
        else:
            value = ''
            rest = rest.lstrip()
            if rest and not rest.startswith(';'):
                raise DocSyntaxError(f'{where}: expected `;` after {name!r}: {rest!r}')
            rest = rest[1:]
        out.setdefault(num, {})[name] = value
    return out


def _strip_comment(cmd: str) -> str:
    """Drop a trailing ``  # comment`` (outside quotes)."""
    quote = None
    for i, ch in enumerate(cmd):
        if quote:
            if ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
        elif ch == '#' and i > 0 and cmd[i - 1] in ' \t':
            return cmd[:i].rstrip()
    return cmd.rstrip()


def _commands(block: Block, lines: list[str], first_line: int) -> None:
    current: Command | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        lineno = first_line + i
        prompt = PROMPT.match(line)
        if prompt:
            text = line[prompt.end() :]
            while text.endswith('\\') and i + 1 < len(lines):
                i += 1
                text = text[:-1].rstrip() + ' ' + lines[i].strip()
            current = Command(
                number=len(block.commands) + 1,
                line=lineno,
                cmd=_strip_comment(text),
                host=prompt['host'] or '',
            )
            block.commands.append(current)
        elif line.startswith('#'):
            pass  # a comment, never output
        elif current is None:
            if line.strip():
                raise DocSyntaxError(
                    f'{block.page}:{lineno}: a console block line before its first'
                    f' command must be a `$ ` command or a `#` comment: {line!r}'
                )
        else:
            current.expected.append(line)
        i += 1
    for cmd in block.commands:
        # blank lines closing an output are layout, not output
        while cmd.expected and not cmd.expected[-1].strip():
            cmd.expected.pop()


def _closes(line: str, fence: str, indent: str) -> bool:
    """Does *line* close a block opened by *fence* at *indent*?"""
    rest = line.lstrip(' ')
    return rest.startswith(fence) and len(line) - len(rest) <= len(indent) + 3


def parse_page(page: Path, text: str | None = None) -> list[Block]:
    """The page's console blocks and ``file=`` blocks, in order."""
    lines = (page.read_text() if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, start = m['indent'], m['fence'], m['lang'], i
        j = i + 1
        while j < len(lines) and not _closes(lines[j], fence, indent):
            j += 1
        body = [
            ln[len(indent) :] if ln.startswith(indent) else ln.lstrip(' ')
            for ln in lines[i + 1 : j]
        ]
        # directives: the HTML comments right above the fence
        directives: dict[int, dict[str, str]] = {}
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        while k >= 0 and (d := DIRECTIVE.match(lines[k])):
            for num, items in parse_directives(d['body'], f'{page}:{k + 1}').items():
                directives.setdefault(num, {}).update(items)
            k -= 1
        i = j + 1
        if lang != 'console' and 'file' not in directives.get(0, {}):
            if directives:
                raise DocSyntaxError(
                    f'{page}:{start + 1}: docs-test directives on a {lang or "plain"}'
                    ' block without `file=`'
                )
            continue
        block = Block(
            page=page,
            line=start + 1,
            lang=lang,
            text='\n'.join(body) + '\n',
            directives=directives.pop(0, {}),
        )
        if lang == 'console':
            _commands(block, body, start + 2)
            for num, items in directives.items():
                if not 1 <= num <= len(block.commands):
                    raise DocSyntaxError(
                        f'{page}:{start + 1}: directive for command {num}, but the'
                        f' block has {len(block.commands)}'
                    )
                block.commands[num - 1].directives.update(items)
        elif directives:
            raise DocSyntaxError(
                f'{page}:{start + 1}: numbered directive on a file block'
            )
        blocks.append(block)
    return blocks


def _line_pattern(expected: str) -> re.Pattern[str]:
    """``...`` matches any text, a run of spaces any run of spaces (tables
    align to their contents); the rest is literal."""
    parts = []
    for chunk in re.split(r'(\.\.\.| +)', expected.rstrip()):
        if chunk == '...':
            parts.append('.*')
        elif chunk and chunk.strip() == '':
            parts.append(' +')
        else:
            parts.append(re.escape(chunk))
    return re.compile(''.join(parts))


def line_matches(expected: str, actual: str) -> bool:
    return _line_pattern(expected).fullmatch(actual.rstrip()) is not None


def match_output(expected: list[str], actual: list[str]) -> bool:
    """Do *actual* lines match *expected* (a line ``...`` = any number of
    lines)?  Blank lines at either end of the output are ignored."""
    actual = [a.rstrip() for a in actual]
    while actual and not actual[-1]:
        actual.pop()
    while actual and not actual[0]:
        actual.pop(0)

    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(expected):
            res = j == len(actual)
        elif expected[i].strip() == '...':
            res = any(go(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            res = (
                j < len(actual)
                and line_matches(expected[i], actual[j])
                and go(i + 1, j + 1)
            )
        memo[key] = res
        return res

    return go(0, 0)


#: a fixed port in a command: ``--port 16160``, ``127.0.0.1:16160``, ...
_PORT = re.compile(
    r'(?:--port[ =]|--metrics-port[ =]|127\.0\.0\.1:|localhost:)(\d{4,5})\b'
)


def fixed_ports(page: Path) -> set[int]:
    """The fixed ports the page's commands name (the commands only: an
    output shown in a ``text`` block may name a port a past run happened to
    get; commands on hosts ``a$``, ... run in network namespaces of their
    own, where their ports are theirs)."""
    commands = '\n'.join(
        c.cmd for b in parse_page(page) for c in b.commands if not c.host
    )
    return {int(p) for p in _PORT.findall(commands)}
