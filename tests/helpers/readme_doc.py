"""The README read the way tests/test_readme.py checks it: blocks, commands, curl requests.

What counts as what (the rules the README is written to):

- A fenced block has a language (bash, yaml, …), a body, the README line of its opening fence
  and the paragraph just above it (which may name the file a YAML block shows).
- In `bash` blocks each logical line (`\\` continuations joined) is split at `;`, `&&`, `||`,
  `|` and `&` into simple commands; redirections (`> FILE`) and leading `VAR=value`
  assignments are dropped. A comment (`#` at the start of a word, outside quotes) is prose,
  except for two things: a command it quotes that starts with `loopline`, `make` or
  `python -m` is checked too, and the `--options` it names belong to its line's own command
  (`loopline vision promote 1   # … (--fleet F for one)`).
- Comments in YAML blocks are read the same way (`# store it: loopline eval rag …`).
- Inline code in prose that starts with `loopline `, `python -m ` or `make ` is a command
  too. Prose may name a command without its required arguments (`loopline rag ingest`), so
  only its sub-commands and options are checked, not the argument count.

It only reads; the checks against the code (click tree, routes, validators) take what this
module returns. Nothing here runs a command.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_PREFIXES = ("loopline ", "make ", "python -m ", "python3 -m ", ".venv/bin/python -m ")
OPERATORS = {";", "&&", "||", "|", "&"}
REDIRECTIONS = {">", ">>", "<", "2>", "2>>", "&>"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of the README."""

    lang: str
    body: str
    line: int  # README line of the opening fence
    before: str  # the paragraph just above the block


@dataclass(frozen=True)
class Command:
    """One simple command found in the README."""

    words: tuple[str, ...]
    line: int
    complete: bool = True  # False for prose and comments: required arguments may be left out
    comment: str = ""  # the comment of its line, minus the commands it quotes

    @property
    def program(self) -> str:
        return self.words[0]

    def __str__(self) -> str:
        return f"README.md:{self.line}: {shlex.join(self.words)}"


# --- markdown ---------------------------------------------------------------------------
def fenced_blocks(text: str) -> list[Block]:
    """The ``` blocks of `text`, in order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        lang = lines[i][3:].strip().lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        blocks.append(Block(lang, "\n".join(lines[i + 1 : end]) + "\n", i + 1, _paragraph_above(lines, i)))
        i = end + 1
    return blocks


def _paragraph_above(lines: list[str], fence: int) -> str:
    j = fence - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    end = j + 1
    while j >= 0 and lines[j].strip() and not lines[j].startswith("```"):
        j -= 1
    return "\n".join(lines[j + 1 : end])


def prose(text: str) -> str:
    """`text` with the lines of fenced blocks blanked (line numbers stay the same)."""
    out, inside = [], False
    for line in text.splitlines():
        fence = line.startswith("```")
        out.append("" if inside or fence else line)
        if fence:
            inside = not inside
    return "\n".join(out)


def inline_code(text: str) -> list[tuple[int, str]]:
    """(line, code) of each `inline code` span outside fenced blocks."""
    body = prose(text)
    return [(body.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())) for m in re.finditer(r"`([^`]+)`", body)]


# --- shell ------------------------------------------------------------------------------
def split_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one shell line: `#` starts a comment at a word start, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1 :].strip()
    return line, ""


def simple_commands(code: str) -> list[list[str]]:
    """The simple commands of a line of shell code, as words (see the module docstring)."""
    lexer = shlex.shlex(code, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = [[]]
    skip = False
    for token in lexer:
        if skip:
            skip = False
        elif token in OPERATORS:
            commands.append([])
        elif token in REDIRECTIONS:
            skip = True
        else:
            commands[-1].append(token)
    out = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def logical_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """(README line, text) of each line of a shell block, `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", first_line
    for n, line in enumerate(body.splitlines(), start=first_line):
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def comment_commands(comment: str, line: int) -> tuple[list[Command], str]:
    """The commands a comment quotes, and the comment without them (and without inline code)."""
    found: list[Command] = []
    rest = comment
    starts = "|".join(re.escape(p.strip()) for p in COMMAND_PREFIXES)
    for m in re.finditer(rf"(?<![\w/.-])(?:{starts})\s[^`;()]*", comment):
        try:
            words = simple_commands(m.group(0))
        except ValueError:  # unbalanced quotes: prose after all
            continue
        found += [Command(tuple(w), line, complete=False) for w in words]
        rest = rest.replace(m.group(0), " ")
    rest = re.sub(r"`[^`]*`", " ", rest)
    return found, rest


def block_commands(block: Block) -> list[Command]:
    """The commands of a shell block, and those quoted in the comments of any other block."""
    commands: list[Command] = []
    shell = block.lang in SHELL_LANGS
    for line, text in logical_lines(block.body, block.line + 1):
        code, comment = split_comment(text)
        quoted, rest = comment_commands(comment, line)
        if shell:
            commands += [Command(tuple(words), line, comment=rest) for words in simple_commands(code)]
        commands += quoted
    return commands


def prose_commands(text: str) -> list[Command]:
    """Commands written as inline code in prose (`loopline eval vision MODEL`)."""
    out = []
    for line, code in inline_code(text):
        if code.startswith(COMMAND_PREFIXES):
            out += [Command(tuple(words), line, complete=False) for words in simple_commands(code)]
    return out


def comment_options(command: Command) -> list[str]:
    """The `--options` a command's comment names."""
    return re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command.comment)


# --- click ------------------------------------------------------------------------------
def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    return cmd.context_class(cmd, info_name=name, parent=parent, **cmd.context_settings)


def option_names(cmd: click.Command, ctx: click.Context) -> set[str]:
    return {name for p in cmd.get_params(ctx) if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}


def resolve(
    root: click.Command, prog: str, args: list[str], *, complete: bool = True
) -> tuple[click.Command, click.Context, list[str]]:
    """Parse `args` the way click would, without converting values or running anything.

    Returns the command the words reach, its context and the problems: an unknown
    sub-command or option, an option without its value, extra arguments and (when
    `complete`) a missing required argument or option (one read from the environment aside).
    """
    cmd, ctx, path = root, _context(root, prog, None), [prog]
    while True:
        try:
            opts, rest, _ = cmd.make_parser(ctx).parse_args(list(args))
        except click.UsageError as exc:
            return cmd, ctx, [f"`{' '.join(path)}`: {exc.format_message()}"]
        if isinstance(cmd, click.Group) and rest:
            name, args = rest[0], rest[1:]
            sub = cmd.get_command(ctx, name)
            if sub is None:
                known = ", ".join(cmd.list_commands(ctx))
                return cmd, ctx, [f"`{' '.join(path)}` has no sub-command {name!r} (it has: {known})"]
            if (sub.help or "").startswith("(unavailable"):
                return sub, ctx, [f"`{' '.join(path)} {name}` cannot be checked: {sub.help}"]
            cmd, ctx = sub, _context(sub, name, ctx)
            path.append(name)
            continue
        problems = []
        if rest and not isinstance(cmd, click.Group) and not ctx.allow_extra_args:
            problems.append(f"`{' '.join(path)}`: unexpected extra arguments {rest}")
        if complete:
            for p in cmd.params:
                value = opts.get(p.name)
                if isinstance(p, click.Argument) and p.required and (not isinstance(value, str | tuple) or value == ()):
                    problems.append(f"`{' '.join(path)}`: missing argument {p.human_readable_name}")
                if isinstance(p, click.Option) and p.required and value is None and not p.envvar:
                    problems.append(f"`{' '.join(path)}`: missing option {p.opts[-1]}")
        return cmd, ctx, problems


def module_command(module: str) -> click.Command | None:
    """The click command `python -m module` runs, None if it runs something else.

    Raises ImportError when there is no such module, or a package has no `__main__`. The
    command is the callable the `if __name__ == "__main__":` block calls.
    """
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ImportError(f"no module named {module!r}")
    if spec.submodule_search_locations is not None:
        module = f"{module}.__main__"
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ImportError(f"package {module.removesuffix('.__main__')!r} has no __main__ module")
    if spec.origin is None or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    called = None
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            calls = [n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
            called = next((c.func.id for c in calls if isinstance(c.func, ast.Name)), None)
    if called is None:
        return None
    found = getattr(importlib.import_module(module), called, None)
    return found if isinstance(found, click.Command) else None


# --- curl -------------------------------------------------------------------------------
CURL_VALUE_OPTIONS = {
    "-H": "header",
    "--header": "header",
    "-d": "data",
    "--data": "data",
    "--data-raw": "data",
    "--data-binary": "data",
    "--data-urlencode": "data",
    "-F": "data",
    "--form": "data",
    "-X": "method",
    "--request": "method",
    "-o": "",
    "--output": "",
    "-u": "",
    "--user": "",
    "-w": "",
    "--write-out": "",
    "-m": "",
    "--max-time": "",
    "--url": "url",
}
CURL_FLAGS = {
    "-s": "",
    "--silent": "",
    "-S": "",
    "--show-error": "",
    "-N": "",
    "--no-buffer": "",
    "-f": "",
    "--fail": "",
    "-L": "",
    "--location": "",
    "-i": "",
    "--include": "",
    "-v": "",
    "--verbose": "",
    "-I": "head",
    "--head": "head",
    "-G": "get",
    "--get": "get",
}


def curl_request(args: list[str]) -> tuple[str, str]:
    """(method, path) of a curl command line (without `curl`); ValueError for what it does not know."""
    kinds: list[str] = []
    method = url = None
    words = list(args)
    while words:
        word = words.pop(0)
        if not word.startswith("-") or word == "-":
            if url is not None:
                raise ValueError(f"two URLs: {url!r} and {word!r}")
            url = word
            continue
        if not word.startswith("--") and len(word) > 2:  # -sN, -sX POST
            expanded = [f"-{c}" for c in word[1:]]
            if any(e not in CURL_FLAGS for e in expanded[:-1]):
                raise ValueError(f"unknown curl flags in {word!r}")
            words = expanded[1:] + words
            word = expanded[0]
        if word in CURL_FLAGS:
            kinds.append(CURL_FLAGS[word])
        elif word in CURL_VALUE_OPTIONS:
            if not words:
                raise ValueError(f"{word} needs a value")
            value, kind = words.pop(0), CURL_VALUE_OPTIONS[word]
            kinds.append(kind)
            if kind == "method":
                method = value.upper()
            elif kind == "url":
                url = value
        else:
            known = ", ".join(sorted({*CURL_FLAGS, *CURL_VALUE_OPTIONS}))
            raise ValueError(f"curl option {word!r} is not known to this check (known: {known}); add it")
    if url is None:
        raise ValueError("no URL")
    if method is None:
        method = "HEAD" if "head" in kinds else "POST" if "data" in kinds and "get" not in kinds else "GET"
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return method, parts.path or "/"


def make_targets(makefile: Path) -> set[str]:
    """The targets a Makefile defines (`name:` at a line start, not `name :=`)."""
    text = makefile.read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE)}
