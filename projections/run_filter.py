"""The run-search filter language: tokenizer, recursive-descent parser and DuckDB compiler.

A filter such as ``metrics.loss < 1 AND (params.lr = '0.01' OR tags.team ILIKE 'vis%')`` is
tokenized, parsed into a small AST (``parse_run_filter``) and compiled into a parameterised DuckDB
boolean expression over the ``runs`` table aliased ``r`` (``compile_run_filter``). Every value and
key the user wrote travels in ``params`` and binds to a ``?`` placeholder; the SQL text holds only
fixed fragments written in this module. The language is MLflow's ``search_runs`` filter (see
shared/reference/mlflow-search-grammar.md) without its leniencies, plus OR, NOT, parentheses,
MIN/MAX/LATEST on metrics and numeric comparison of params and tags. ``compile_order_by`` compiles
MLflow ``order_by`` lists, ``compile_experiment_filter`` the ``search_experiments`` filter over
``experiments`` aliased ``e``. Any string either compiles or raises ``FilterSyntaxError``.

Grammar (keywords and function names are case-insensitive; entity prefixes and attribute keys
are case-sensitive, as in MLflow)::

    filter     := <empty> | or_expr
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := not_expr ( AND not_expr )*
    not_expr   := NOT not_expr | '(' or_expr ')' | comparison
    comparison := operand ( op value | (LIKE | ILIKE) value | [NOT] IN list | IS [NOT] NULL )
    operand    := ident | (MIN | MAX | LATEST) '(' ident ')'
    ident      := [prefix '.'] key     -- prefix may be `backticked`; key = all after the 1st dot
    key        := word ('.' word)* | `quoted` | "quoted" | 'quoted'
    value      := 'string' | "string" | number          -- no escapes inside strings
    list       := '(' string ( ',' string )* ')'
    op         := = | != | < | <= | > | >=
    order_key  := operand [ ASC | DESC ]
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

__all__ = [
    "And",
    "CompiledFilter",
    "CompiledOrder",
    "Comparison",
    "FilterSyntaxError",
    "Identifier",
    "ListLiteral",
    "Node",
    "Not",
    "NumberLiteral",
    "Or",
    "OrderKey",
    "StringLiteral",
    "Token",
    "compile_experiment_filter",
    "compile_order_by",
    "compile_run_filter",
    "parse_experiment_filter",
    "parse_order_by",
    "parse_run_filter",
    "tokenize",
]

# Nesting of parentheses and NOTs beyond this is refused: it keeps the recursive parser and
# compiler far from Python's recursion limit whatever the input.
MAX_NESTING: Final = 64


# --------------------------------------------------------------------------------------------
# Errors and results
# --------------------------------------------------------------------------------------------


class FilterSyntaxError(ValueError):
    """A filter or order_by clause that cannot be compiled, with where and why.

    ``position`` is a 0-based character offset into the filter (or into the order_by clause
    numbered ``clause_index``; ``clause_index`` is None for filters). ``expected`` is a short
    text of what was expected there; ``reason`` the sentence after the position in the message.
    """

    def __init__(
        self,
        position: int,
        expected: str,
        reason: str,
        *,
        clause_index: int | None = None,
    ) -> None:
        self.position = position
        self.expected = expected
        self.reason = reason
        self.clause_index = clause_index
        if clause_index is None:
            message = f"Invalid filter at position {position}: {reason}"
        else:
            message = f"Invalid order_by clause {clause_index} at position {position}: {reason}"
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:  # keep the keyword argument across pickling
        return (_rebuild_error, (self.position, self.expected, self.reason, self.clause_index))


def _rebuild_error(
    position: int, expected: str, reason: str, clause_index: int | None
) -> FilterSyntaxError:
    return FilterSyntaxError(position, expected, reason, clause_index=clause_index)


@dataclass(frozen=True)
class CompiledFilter:
    """A boolean SQL expression with ``?`` placeholders, and the values to bind, in order."""

    sql: str
    params: tuple[object, ...]


@dataclass(frozen=True)
class CompiledOrder:
    """The text after ORDER BY, with ``?`` placeholders, and the values to bind, in order."""

    sql: str
    params: tuple[object, ...]
    # True when the first key is start_time DESC (the default order): the page can then be
    # looked for among the most recently created runs first (see queries.search_runs).
    newest_first: bool = False
    # When the first key is a metric: (metric key, its sort value as SQL over the summary
    # row ``m``). The page can then be looked for among the runs with the best values first.
    leading_metric: tuple[str, str] | None = None
    # The keys after the first one (with their values to bind), for a query that has the
    # leading metric's value at hand already.
    rest_sql: str = ""
    rest_params: tuple[object, ...] = ()


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

TokenKind: TypeAlias = Literal[
    "name", "keyword", "string", "number", "op", "lparen", "rparen", "comma", "eof"
]

_KEYWORDS: Final = frozenset(
    {"AND", "OR", "NOT", "LIKE", "ILIKE", "IN", "IS", "NULL", "ASC", "DESC"}
)
_FUNCTIONS: Final = {"MIN": "min", "MAX": "max", "LATEST": "latest"}
_NUMBER_RE: Final = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Token:
    """One token. ``text`` is the source text; ``value`` is what it means.

    name: ``value`` is the part before the first dot (or the whole name), ``key`` the part after
    it (None without a dot). keyword: ``value`` is the upper-cased keyword. string: ``value`` is
    the content between the quotes. number and op: ``value`` is the text.
    """

    kind: TokenKind
    text: str
    position: int
    value: str
    key: str | None = None
    prefix_quoted: bool = False

    def describe(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


def _is_word_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_word_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _syntax(position: int, expected: str, found: str) -> FilterSyntaxError:
    return FilterSyntaxError(position, expected, f"expected {expected}, found {found}")


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def char(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                out.append(Token("eof", "", len(text), ""))
                return out
            out.append(self.next_token())

    def next_token(self) -> Token:
        start = self.pos
        ch = self.char()
        if ch in "(),":
            self.pos += 1
            kind: TokenKind = "lparen" if ch == "(" else "rparen" if ch == ")" else "comma"
            return Token(kind, ch, start, ch)
        if ch in "=<>!":
            two = self.text[start : start + 2]
            if two in ("==", "<>"):
                raise FilterSyntaxError(
                    start, "a comparison operator",
                    f"'{two}' is not an operator; use {'=' if two == '==' else '!='}",
                )
            op = two if two in ("!=", "<=", ">=") else ch
            if op == "!":
                raise _syntax(start, "'!='", "'!'")
            self.pos += len(op)
            return Token("op", op, start, op)
        if ch in "'\"":
            content = self.quoted(ch, "string")
            if self.char() == ch:
                # 'a''b' is not an escaped quote: strings have no escapes (as MLflow), and we
                # refuse the ambiguity instead of reading two quotes into the value.
                other = '"' if ch == "'" else "'"
                raise FilterSyntaxError(
                    self.pos, "AND, OR or end of input",
                    f"strings have no escapes ({ch}{ch} is not a quote); to match a {ch}, "
                    f"put the value in {other} quotes",
                )
            return Token("string", self.text[start : self.pos], start, content)
        if ch == "`" or _is_word_start(ch):
            return self.name()
        if _is_digit(ch) or ch in ".-":
            match = _NUMBER_RE.match(self.text, start)
            if match is None:
                raise FilterSyntaxError(
                    start, "a name, value or operator", f"unexpected character {ch!r}"
                )
            self.pos = match.end()
            follow = self.char()
            if follow == "." or _is_word_char(follow):
                raise FilterSyntaxError(
                    start, "a number", f"invalid number {self.text[start:self.pos + 1]!r}"
                )
            return Token("number", match.group(), start, match.group())
        raise FilterSyntaxError(start, "a name, value or operator", f"unexpected character {ch!r}")

    def quoted(self, quote: str, what: str) -> str:
        """Read from an opening quote to the next same quote; there are no escapes (as MLflow)."""
        start = self.pos
        end = self.text.find(quote, start + 1)
        if end < 0:
            raise FilterSyntaxError(
                start, f"a closing {quote}", f"unterminated {what}: no closing {quote}"
            )
        self.pos = end + 1
        return self.text[start + 1 : end]

    def word(self) -> str:
        start = self.pos
        while _is_word_char(self.char()):
            self.pos += 1
        return self.text[start : self.pos]

    def name(self) -> Token:
        start = self.pos
        if self.char() == "`":
            first = self.quoted("`", "quoted name")
            if not first:
                raise FilterSyntaxError(start, "a name", "empty quoted name")
            prefix_quoted = True
        else:
            first = self.word()
            prefix_quoted = False
        if self.char() != ".":
            if not prefix_quoted and first.upper() in _KEYWORDS:
                return Token("keyword", first, start, first.upper())
            return Token("name", self.text[start : self.pos], start, first, None, prefix_quoted)
        self.pos += 1  # the first dot: everything after it is the key
        key_start = self.pos
        ch = self.char()
        if ch in "`\"'":
            key = self.quoted(ch, "quoted key")
            if not key:
                raise FilterSyntaxError(key_start, "a key", "empty quoted key")
        elif _is_word_start(ch):
            # An unquoted key is word ('.' word)*: `tags.mlflow.runName` has key mlflow.runName.
            self.word()
            while self.char() == "." and _is_word_char(self.char(1)):
                self.pos += 1
                self.word()
            if self.char() == ".":
                raise _syntax(self.pos + 1, "a name after '.'", self._found(self.pos + 1))
            key = self.text[key_start : self.pos]
        elif _is_digit(ch):
            raise FilterSyntaxError(
                key_start, "a key",
                "a key that starts with a digit must be quoted, e.g. metrics.`2019 error`",
            )
        else:
            raise _syntax(key_start, "a key after '.'", self._found(key_start))
        return Token("name", self.text[start : self.pos], start, first, key, prefix_quoted)

    def _found(self, position: int) -> str:
        return repr(self.text[position]) if position < len(self.text) else "end of input"


def tokenize(text: str) -> list[Token]:
    """Split a filter into tokens, ending with an ``eof`` token; raises FilterSyntaxError."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":  # lone surrogates cannot be encoded for DuckDB
            raise FilterSyntaxError(i, "a character", f"invalid character {ch!r}")
    return _Lexer(text).tokens()


# --------------------------------------------------------------------------------------------
# AST
# --------------------------------------------------------------------------------------------

Entity: TypeAlias = Literal["metric", "param", "tag", "attribute"]
Aggregate: TypeAlias = Literal["latest", "min", "max"]
Comparator: TypeAlias = Literal[
    "=", "!=", "<", "<=", ">", ">=", "LIKE", "ILIKE", "IN", "NOT IN", "IS NULL", "IS NOT NULL"
]


@dataclass(frozen=True)
class Identifier:
    """What a clause compares: ``key`` is canonical (``created`` becomes ``start_time``).

    ``aggregate`` is set for metrics only: ``latest`` for a bare metric and LATEST(...).
    ``text`` is the operand as written; ``position`` where it starts.
    """

    entity: Entity
    key: str
    position: int
    text: str
    aggregate: Aggregate | None = None


@dataclass(frozen=True)
class StringLiteral:
    value: str
    position: int


@dataclass(frozen=True)
class NumberLiteral:
    """A number as written; ``value`` is its float, ``integer`` its int when written as one."""

    text: str
    value: float
    position: int
    integer: int | None = None


@dataclass(frozen=True)
class ListLiteral:
    items: tuple[StringLiteral, ...]
    position: int


Value: TypeAlias = StringLiteral | NumberLiteral | ListLiteral


@dataclass(frozen=True)
class Comparison:
    ident: Identifier
    op: Comparator
    value: Value | None  # None for IS [NOT] NULL
    position: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    operand: Node
    position: int


Node: TypeAlias = Comparison | And | Or | Not


@dataclass(frozen=True)
class OrderKey:
    ident: Identifier
    descending: bool


# --------------------------------------------------------------------------------------------
# What can be searched: runs and experiments
# --------------------------------------------------------------------------------------------

_STRING_OPS: Final[frozenset[str]] = frozenset({"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"})
_ORDERING_OPS: Final[frozenset[str]] = frozenset({"<", "<=", ">", ">="})
_NUMERIC_OPS: Final[frozenset[str]] = frozenset({"=", "!="}) | _ORDERING_OPS
_NULL_OPS: Final[frozenset[str]] = frozenset({"IS NULL", "IS NOT NULL"})


@dataclass(frozen=True)
class _Schema:
    what: str  # "run" or "experiment", for messages
    alias: str  # table alias in the compiled SQL
    id_column: str  # the column joining the owner to its tag rows
    entities: Mapping[str, Entity]
    # canonical attribute key -> (column, comparators allowed with a quoted string / list)
    string_attrs: Mapping[str, tuple[str, frozenset[str]]]
    numeric_attrs: Mapping[str, str]  # canonical key -> column
    filter_aliases: Mapping[str, str]  # alias -> canonical key, accepted in filters
    order_aliases: Mapping[str, str]  # alias -> canonical key, accepted in order_by
    refused_attrs: Mapping[str, str]  # key -> why it cannot be searched
    tag_table: str
    extra_entities: Mapping[str, str] = field(default_factory=dict)  # prefix -> why refused

    def attribute_keys(self) -> str:
        return ", ".join(sorted({*self.string_attrs, *self.numeric_attrs}))


_RUN_STRING_OPS: Final = _STRING_OPS
_RUN_SCHEMA: Final = _Schema(
    what="run",
    alias="r",
    id_column="run_key",  # the per-run tables are keyed by the run's integer key
    entities={
        "metric": "metric", "metrics": "metric",
        "param": "param", "params": "param", "parameter": "param", "parameters": "param",
        "tag": "tag", "tags": "tag",
        "attribute": "attribute", "attributes": "attribute", "attr": "attribute",
        "run": "attribute",
    },
    string_attrs={
        "run_id": ("run_id", _RUN_STRING_OPS),
        "run_name": ("name", _RUN_STRING_OPS),
        "status": ("status", _RUN_STRING_OPS),
        "user_id": ("user_id", _RUN_STRING_OPS),
        "artifact_uri": ("artifact_uri", _RUN_STRING_OPS),
        # Extensions beyond MLflow: more string columns of the runs table.
        "source_name": ("source_name", _RUN_STRING_OPS),
        "source_type": ("source_type", _RUN_STRING_OPS),
        "git_commit": ("git_commit", _RUN_STRING_OPS),
        "parent_run_id": ("parent_run_id", _RUN_STRING_OPS),
    },
    numeric_attrs={"start_time": "start_time", "end_time": "end_time"},
    filter_aliases={
        "created": "start_time", "Created": "start_time",
        "run name": "run_name", "Run name": "run_name", "Run Name": "run_name",
    },
    # As MLflow, the run-name aliases with a space are not accepted in order_by.
    order_aliases={"created": "start_time", "Created": "start_time"},
    refused_attrs={
        "experiment_id": "filter by experiment with the experiment_ids field instead",
        "lifecycle_stage": "choose active or deleted runs with run_view_type instead",
        "deleted_time": "it cannot be searched",
    },
    tag_table="run_tags",
    extra_entities={"dataset": "run", "datasets": "run"},
)

_EXPERIMENT_SCHEMA: Final = _Schema(
    what="experiment",
    alias="e",
    id_column="experiment_id",
    entities={
        "tag": "tag", "tags": "tag",
        "attribute": "attribute", "attributes": "attribute", "attr": "attribute",
    },
    string_attrs={
        "name": ("name", frozenset({"=", "!=", "LIKE", "ILIKE"})),
        "experiment_id": ("experiment_id", frozenset({"=", "!=", "IN", "NOT IN"})),
    },
    numeric_attrs={"creation_time": "creation_time", "last_update_time": "last_update_time"},
    filter_aliases={},
    order_aliases={},
    refused_attrs={
        "lifecycle_stage": "choose active or deleted experiments with view_type instead",
        "deleted_time": "it cannot be searched",
    },
    tag_table="experiment_tags",
    extra_entities={
        "metric": "experiment", "metrics": "experiment",
        "param": "experiment", "params": "experiment",
        "parameter": "experiment", "parameters": "experiment",
        "dataset": "experiment", "datasets": "experiment",
        "run": "experiment",
    },
)


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, schema: _Schema, *, order_by: bool = False) -> None:
        self.text = text
        self.schema = schema
        self.order_by = order_by
        self.tokens = tokenize(text)
        self.i = 0

    # -- token helpers ---------------------------------------------------------------------

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.peek()
        if tok.kind != "eof":
            self.i += 1
        return tok

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.value in words

    def fail(self, expected: str, tok: Token | None = None) -> FilterSyntaxError:
        tok = tok or self.peek()
        return _syntax(tok.position, expected, tok.describe())

    # -- filter ----------------------------------------------------------------------------

    def parse_filter(self) -> Node | None:
        if self.peek().kind == "eof":
            return None
        node = self.or_expr(0)
        if self.peek().kind != "eof":
            expected = "AND, OR or end of input"
            if self.peek().kind == "rparen":
                raise FilterSyntaxError(
                    self.peek().position, expected, "unbalanced ')': no '(' to close"
                )
            raise self.fail(expected)
        return node

    def or_expr(self, depth: int) -> Node:
        items = [self.and_expr(depth)]
        while self.at_keyword("OR"):
            self.advance()
            items.append(self.and_expr(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self, depth: int) -> Node:
        items = [self.not_expr(depth)]
        while self.at_keyword("AND"):
            self.advance()
            items.append(self.not_expr(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self, depth: int) -> Node:
        nots: list[int] = []
        while self.at_keyword("NOT"):
            nots.append(self.advance().position)
        depth += len(nots)
        tok = self.peek()
        if depth > MAX_NESTING:
            raise FilterSyntaxError(
                tok.position, "a simpler filter", f"nesting deeper than {MAX_NESTING} levels"
            )
        if tok.kind == "lparen":
            self.advance()
            node = self.or_expr(depth + 1)
            if self.peek().kind != "rparen":
                if self.peek().kind == "eof":
                    raise FilterSyntaxError(
                        tok.position, "')'", "unbalanced '(': no ')' closes it"
                    )
                raise self.fail("')', AND or OR")
            self.advance()
        else:
            node = self.comparison()
        for position in reversed(nots):
            node = Not(node, position)
        return node

    def comparison(self) -> Comparison:
        tok = self.peek()
        if tok.kind != "name":
            if tok.kind == "string" and self.peek(1).kind in ("op", "keyword"):
                raise FilterSyntaxError(
                    tok.position, "an identifier",
                    f"expected an identifier, found the string {tok.text}; quote only the key, "
                    "after the dot, e.g. tags.`my key`",
                )
            raise self.fail("an identifier, NOT or '('")
        ident = self.operand()
        start = ident.position
        op_tok = self.peek()
        op: Comparator
        value: Value | None
        if op_tok.kind == "op":
            self.advance()
            op = _as_comparator(op_tok.value)
            self.check_comparator(ident, op)
            value = self.scalar()
        elif self.at_keyword("LIKE", "ILIKE"):
            self.advance()
            op = "LIKE" if op_tok.value == "LIKE" else "ILIKE"
            self.check_comparator(ident, op)
            value = self.scalar()
        elif self.at_keyword("IN"):
            self.advance()
            op = "IN"
            self.check_comparator(ident, op)
            value = self.string_list()
        elif self.at_keyword("NOT"):
            self.advance()
            if not self.at_keyword("IN"):
                raise FilterSyntaxError(
                    self.peek().position, "IN after NOT",
                    f"expected IN after NOT, found {self.peek().describe()}"
                    " (to negate a clause write NOT before it, e.g. NOT tags.a LIKE 'x%')",
                )
            self.advance()
            op = "NOT IN"
            self.check_comparator(ident, op)
            value = self.string_list()
        elif self.at_keyword("IS"):
            self.advance()
            negated = self.at_keyword("NOT")
            if negated:
                self.advance()
            if not self.at_keyword("NULL"):
                raise self.fail("NULL" if negated else "NULL or NOT NULL")
            self.advance()
            op = "IS NOT NULL" if negated else "IS NULL"
            self.check_comparator(ident, op)
            value = None
        else:
            raise self.fail("a comparison operator")
        node = Comparison(ident, op, value, start)
        self.check_value(node)
        return node

    def scalar(self) -> StringLiteral | NumberLiteral:
        tok = self.peek()
        if tok.kind == "string":
            self.advance()
            return StringLiteral(tok.value, tok.position)
        if tok.kind == "number":
            self.advance()
            return _number(tok)
        if tok.kind == "lparen":
            raise FilterSyntaxError(
                tok.position, "a value",
                "expected a value, found '(': a list of values needs IN or NOT IN",
            )
        if tok.kind == "keyword" and tok.value == "NULL":
            raise FilterSyntaxError(
                tok.position, "a value",
                "expected a value, found 'NULL': write IS NULL or IS NOT NULL instead",
            )
        if tok.kind in ("name", "keyword"):
            raise FilterSyntaxError(
                tok.position, "a value",
                f"expected a value, found {tok.describe()}: put strings in quotes",
            )
        raise self.fail("a value")

    def string_list(self) -> ListLiteral:
        open_tok = self.peek()
        if open_tok.kind != "lparen":
            raise self.fail("'(' starting a list of quoted strings")
        self.advance()
        if self.peek().kind == "rparen":
            raise FilterSyntaxError(
                self.peek().position, "a quoted string",
                "expected a non-empty list of quoted strings, found an empty list",
            )
        items: list[StringLiteral] = []
        while True:
            tok = self.peek()
            if tok.kind != "string":
                raise self.fail("a quoted string in the list")
            self.advance()
            items.append(StringLiteral(tok.value, tok.position))
            sep = self.peek()
            if sep.kind == "rparen":
                self.advance()
                return ListLiteral(tuple(items), open_tok.position)
            if sep.kind != "comma":
                raise self.fail("',' or ')'")
            self.advance()

    def operand(self) -> Identifier:
        tok = self.advance()
        is_call = tok.key is None and not tok.prefix_quoted and self.peek().kind == "lparen"
        if not is_call:
            return self.identifier(tok)
        function = _FUNCTIONS.get(tok.value.upper())
        if function is None:
            raise FilterSyntaxError(
                tok.position, "MIN, MAX or LATEST",
                f"unknown function {tok.text!r}; expected MIN, MAX or LATEST",
            )
        self.advance()  # (
        inner = self.peek()
        if inner.kind != "name":
            raise self.fail("a metric such as metrics.loss")
        self.advance()
        ident = self.identifier(inner)
        if ident.entity != "metric":
            raise FilterSyntaxError(
                tok.position, "a metric",
                f"{tok.value.upper()}(...) applies to metrics only, not to {ident.text!r}",
            )
        close = self.peek()
        if close.kind != "rparen":
            raise self.fail("')'")
        self.advance()
        text = self.text[tok.position : close.position + 1]
        agg: Aggregate = "min" if function == "min" else "max" if function == "max" else "latest"
        return Identifier("metric", ident.key, tok.position, text, agg)

    def identifier(self, tok: Token) -> Identifier:
        schema = self.schema
        if tok.key is None:
            return self.attribute(tok, tok.value)
        prefix = tok.value
        entity = schema.entities.get(prefix)
        if entity is None:
            if prefix in schema.extra_entities:
                what = "dataset" if prefix.startswith("dataset") else prefix.rstrip("s")
                if what == "parameter":
                    what = "param"
                raise FilterSyntaxError(
                    tok.position, "a supported entity",
                    f"{what} filters are not supported in {schema.what} "
                    f"{'order_by' if self.order_by else 'search'} ({tok.text!r})",
                )
            valid = ", ".join(sorted(set(schema.entities) - {"run"}))
            raise FilterSyntaxError(
                tok.position, "a known entity",
                f"unknown entity {prefix!r} in {tok.text!r}; valid prefixes are {valid}",
            )
        if entity == "attribute":
            return self.attribute(tok, tok.key)
        key = tok.key
        if entity == "metric":
            return Identifier("metric", key, tok.position, tok.text, "latest")
        return Identifier(entity, key, tok.position, tok.text)

    def attribute(self, tok: Token, key: str) -> Identifier:
        schema = self.schema
        aliases = schema.order_aliases if self.order_by else schema.filter_aliases
        canonical = aliases.get(key, key)
        if canonical in schema.string_attrs or canonical in schema.numeric_attrs:
            return Identifier("attribute", canonical, tok.position, tok.text)
        if key in schema.refused_attrs:
            raise FilterSyntaxError(
                tok.position, "a searchable attribute",
                f"attribute {key!r} cannot be used here: {schema.refused_attrs[key]}",
            )
        if key in schema.filter_aliases:  # a filter-only alias used in order_by
            raise FilterSyntaxError(
                tok.position, "a sortable attribute",
                f"attribute {key!r} cannot be used in order_by; "
                f"use {schema.filter_aliases[key]!r}",
            )
        hint = ""
        if tok.key is None and tok.prefix_quoted and "." in key:
            hint = " (quote only the key, after the dot, e.g. params.`lr`)"
        elif tok.key is None and key in schema.entities:
            hint = f" (did you mean {key}.<key>?)"
        raise FilterSyntaxError(
            tok.position, "a known attribute",
            f"unknown {schema.what} attribute {key!r}{hint}; "
            f"valid attributes are {schema.attribute_keys()}",
        )

    # -- semantic checks: whether the comparator, then the value, fits the identifier --------
    # Errors point at the start of the clause.

    def check_comparator(self, ident: Identifier, op: Comparator) -> None:
        where, name = ident.position, ident.text
        if ident.entity == "metric":
            # Metrics: = != < <= > >= with a number; IS NULL, LIKE and lists are errors (MLflow).
            if op not in _NUMERIC_OPS:
                raise FilterSyntaxError(
                    where, "a numeric comparator",
                    f"{op} cannot be used with metric {name!r}; "
                    "metrics allow =, !=, <, <=, >, >= with a number",
                )
            return
        if ident.entity in ("param", "tag"):
            # Params and tags take every comparator; the value decides (see check_value).
            return
        if ident.key in self.schema.numeric_attrs:
            if op not in _NUMERIC_OPS:
                raise FilterSyntaxError(
                    where, "a numeric comparator",
                    f"{op} cannot be used with numeric attribute {name!r}; "
                    "allowed are =, !=, <, <=, >, >= with a number",
                )
            return
        allowed = self.schema.string_attrs[ident.key][1]
        if op not in allowed:
            listed = ", ".join(
                o for o in ("=", "!=", "LIKE", "ILIKE", "IN", "NOT IN") if o in allowed
            )
            raise FilterSyntaxError(
                where, "a string comparator",
                f"{op} cannot be used with attribute {name!r}; allowed are {listed}",
            )

    def check_value(self, node: Comparison) -> None:
        ident, op, value = node.ident, node.op, node.value
        where, name = node.position, ident.text
        if ident.entity == "metric" or ident.key in self.schema.numeric_attrs:
            # Metrics and numeric attributes take numbers only (a quoted value is an error).
            if not isinstance(value, NumberLiteral):
                what = "metric" if ident.entity == "metric" else "numeric attribute"
                raise FilterSyntaxError(
                    where, "a number",
                    f"{what} {name!r} compares with a number, not the string {_shown(value)}",
                )
            return
        if ident.entity in ("param", "tag"):
            # Params and tags: quoted strings for = != LIKE ILIKE IN NOT IN; IS [NOT] NULL; an
            # unquoted number compares numerically (our extension, also for < <= > >=).
            kind = ident.entity
            if op in ("LIKE", "ILIKE") and not isinstance(value, StringLiteral):
                raise FilterSyntaxError(
                    where, "a quoted string",
                    f"{op} on {kind} {name!r} needs a quoted pattern, e.g. '0.1%'",
                )
            if op in _ORDERING_OPS and not isinstance(value, NumberLiteral):
                raise FilterSyntaxError(
                    where, "an unquoted number",
                    f"{op} on {kind} {name!r} compares numbers and needs an unquoted number; "
                    "quoted strings allow only =, !=, LIKE, ILIKE, IN, NOT IN",
                )
            return
        if isinstance(value, NumberLiteral):  # string attributes
            raise FilterSyntaxError(
                where, "a quoted string",
                f"attribute {name!r} compares with a quoted string, e.g. '{value.text}'",
            )

    # -- order_by ------------------------------------------------------------------------

    def parse_order_key(self) -> OrderKey:
        tok = self.peek()
        if tok.kind != "name":
            raise self.fail("an identifier such as metrics.loss")
        ident = self.operand()
        descending = False
        if self.at_keyword("ASC", "DESC"):
            descending = self.advance().value == "DESC"
        if self.peek().kind != "eof":
            what = "end of clause" if self.tokens[self.i - 1].kind == "keyword" else (
                "ASC, DESC or end of clause"
            )
            reason = f"expected {what}, found {self.peek().describe()}"
            if self.peek().kind == "comma":
                reason += " (give one key per order_by element)"
            raise FilterSyntaxError(self.peek().position, what, reason)
        return OrderKey(ident, descending)


_OPERATORS: Final[Mapping[str, Comparator]] = {
    "=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="
}


def _as_comparator(op: str) -> Comparator:
    return _OPERATORS[op]  # the lexer makes only these


def _shown(value: Value | None) -> str:
    if isinstance(value, StringLiteral):
        return repr(value.value)
    if isinstance(value, ListLiteral):
        return "list (" + ", ".join(repr(i.value) for i in value.items) + ")"
    return "value"


def _number(tok: Token) -> NumberLiteral:
    value = float(tok.value)
    if not math.isfinite(value):
        raise FilterSyntaxError(tok.position, "a number", f"number {tok.text} is out of range")
    integer: int | None = None
    if not any(c in tok.value for c in ".eE"):
        as_int = int(tok.value)
        # An integer that fits BIGINT binds as an int (exact for millisecond timestamps).
        if -(2**63) <= as_int < 2**63:
            integer = as_int
    return NumberLiteral(tok.text, value, tok.position, integer)


def parse_run_filter(text: str | None) -> Node | None:
    """Parse and check a run filter; None when it is empty. Raises FilterSyntaxError."""
    if text is None:
        return None
    return _Parser(text, _RUN_SCHEMA).parse_filter()


def parse_experiment_filter(text: str | None) -> Node | None:
    """Parse and check an experiment filter; None when it is empty. Raises FilterSyntaxError."""
    if text is None:
        return None
    return _Parser(text, _EXPERIMENT_SCHEMA).parse_filter()


def parse_order_by(clauses: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Parse run order_by clauses; errors carry the clause's index and a position within it."""
    keys: list[OrderKey] = []
    seen: dict[tuple[str, str, str | None], int] = {}
    for index, clause in enumerate(clauses or ()):
        try:
            key = _Parser(clause, _RUN_SCHEMA, order_by=True).parse_order_key()
        except FilterSyntaxError as exc:
            raise FilterSyntaxError(
                exc.position, exc.expected, exc.reason, clause_index=index
            ) from None
        ident = key.ident
        identity = (ident.entity, ident.key, ident.aggregate)
        if identity in seen:
            # MLflow answers HTTP 500 here (a bug); we refuse it as a plain invalid input.
            raise FilterSyntaxError(
                ident.position, "a key not already listed",
                f"{ident.text!r} repeats order_by clause {seen[identity]}",
                clause_index=index,
            )
        seen[identity] = index
        keys.append(key)
    return tuple(keys)


# --------------------------------------------------------------------------------------------
# Compiler
# --------------------------------------------------------------------------------------------

_METRIC_COLUMNS: Final[Mapping[str, str]] = {
    "latest": "m.latest_value", "min": "m.min_value", "max": "m.max_value"
}
_SQL_OPS: Final[Mapping[str, str]] = {
    "=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "LIKE": "LIKE",
    "ILIKE": "ILIKE",
}


class _Compiler:
    def __init__(self, schema: _Schema) -> None:
        self.schema = schema
        self.params: list[object] = []

    def bind(self, value: object) -> str:
        self.params.append(value)
        return "?"

    def node(self, node: Node) -> str:
        # Every leaf compiles to an expression that is TRUE or FALSE, never NULL, so NOT is the
        # exact complement: NOT f returns precisely the rows f does not (a run lacking the key
        # included). The "missing key never matches" rule applies to comparisons themselves.
        if isinstance(node, And):
            return "(" + " AND ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.node(node.operand)})"
        return self.comparison(node)

    def comparison(self, node: Comparison) -> str:
        ident = node.ident
        if ident.entity == "metric":
            return self.metric(node)
        if ident.entity in ("param", "tag"):
            return self.key_value(node)
        return self.attribute(node)

    def metric(self, node: Comparison) -> str:
        # Bare metrics and LATEST(...) use latest_value, MIN(...) min_value, MAX(...) max_value.
        # A run without the metric has no row: EXISTS is FALSE whatever the comparator, even !=.
        assert isinstance(node.value, NumberLiteral)
        column = _METRIC_COLUMNS[node.ident.aggregate or "latest"]
        key = self.bind(node.ident.key)
        cond = _numeric_condition(column, node.op, self.bind(node.value.value))
        return (
            f"EXISTS (SELECT 1 FROM run_metric_summary m WHERE m.run_key = r.run_key "
            f"AND m.key = {key} AND {cond})"
        )

    def key_value(self, node: Comparison) -> str:
        schema = self.schema
        if node.ident.entity == "param":
            table, owner = "run_params", "run_key"
        else:
            table, owner = schema.tag_table, schema.id_column
        head = (
            f"SELECT 1 FROM {table} kv WHERE kv.{owner} = {schema.alias}.{owner} "
            f"AND kv.key = {self.bind(node.ident.key)} AND kv.value IS NOT NULL"
        )
        op, value = node.op, node.value
        # IS NULL means "no such key" (MLflow); IS NOT NULL "the key is set".
        if op == "IS NULL":
            return f"(NOT EXISTS ({head}))"
        if op == "IS NOT NULL":
            return f"EXISTS ({head})"
        if isinstance(value, NumberLiteral):
            # Numeric params/tags (our extension): an unquoted number matches a stored value
            # that reads as the same number ('0.5' and '0.50' for 0.5), never a non-number
            # ('abc' fails every numeric comparison, even !=). A stored 'nan' behaves as a NaN
            # metric does: it fails = < <= > >= and passes !=.
            cond = _numeric_condition("TRY_CAST(kv.value AS DOUBLE)", op, self.bind(value.value))
        elif isinstance(value, ListLiteral):
            cond = f"kv.value {op} ({self.bind_list(value)})"
        else:
            assert isinstance(value, StringLiteral)
            # Quoted values compare as strings: =, !=, LIKE, IN are case-sensitive, ILIKE is not;
            # LIKE is anchored with % and _ as wildcards and no escape character (as MLflow).
            cond = f"kv.value {_SQL_OPS[op]} {self.bind(value.value)}"
        # A run without the key has no row, so even != and NOT IN do not match it.
        return f"EXISTS ({head} AND {cond})"

    def attribute(self, node: Comparison) -> str:
        schema = self.schema
        key = node.ident.key
        value = node.value
        if key in schema.numeric_attrs:
            column = f"{schema.alias}.{schema.numeric_attrs[key]}"
            assert isinstance(value, NumberLiteral)
            bound = self.bind(value.integer if value.integer is not None else value.value)
            # A NULL column (a run without end_time) never matches, even with !=.
            return f"COALESCE({column} {_SQL_OPS[node.op]} {bound}, FALSE)"
        column = f"{schema.alias}.{schema.string_attrs[key][0]}"
        if isinstance(value, ListLiteral):
            return f"COALESCE({column} {node.op} ({self.bind_list(value)}), FALSE)"
        assert isinstance(value, StringLiteral)
        # status compares the enum name as stored ('FINISHED'), case-sensitively.
        return f"COALESCE({column} {_SQL_OPS[node.op]} {self.bind(value.value)}, FALSE)"

    def bind_list(self, value: ListLiteral) -> str:
        return ", ".join(self.bind(item.value) for item in value.items)


def _numeric_condition(column: str, op: str, placeholder: str) -> str:
    # NaN: DuckDB orders NaN above every number and makes NaN = NaN true, so guard with isnan:
    # a NaN fails = < <= > >= and passes != (as MLflow). A NULL column fails everything.
    if op == "!=":
        return f"(isnan({column}) OR {column} <> {placeholder})"
    return f"(NOT isnan({column}) AND {column} {_SQL_OPS[op]} {placeholder})"


def _compile(node: Node | None, schema: _Schema) -> CompiledFilter:
    if node is None:
        return CompiledFilter("TRUE", ())
    compiler = _Compiler(schema)
    sql = compiler.node(node)
    return CompiledFilter(sql, tuple(compiler.params))


def compile_run_filter(text: str | None) -> CompiledFilter:
    """Compile a run filter into a boolean over ``runs r``; "TRUE" when empty or blank."""
    return _compile(parse_run_filter(text), _RUN_SCHEMA)


def compile_experiment_filter(text: str | None) -> CompiledFilter:
    """Compile a search_experiments filter into a boolean over ``experiments e``."""
    return _compile(parse_experiment_filter(text), _EXPERIMENT_SCHEMA)


def compile_order_by(clauses: Sequence[str] | None) -> CompiledOrder:
    """Compile order_by clauses ("metrics.loss DESC", ...) into the text after ORDER BY.

    Runs without the key sort last in both directions; a NaN metric sorts after every number
    and before runs without the metric. After the listed keys come start_time DESC (unless
    listed) and run_id ASC, MLflow's default order.
    """
    params: list[object] = []
    parts: list[str] = []
    listed: set[str] = set()
    leading_metric: tuple[str, str] | None = None
    for order_key in parse_order_by(clauses):
        ident = order_key.ident
        direction = "DESC" if order_key.descending else "ASC"
        if ident.entity == "metric":
            column = _METRIC_COLUMNS[ident.aggregate or "latest"]
            lookup = "FROM run_metric_summary m WHERE m.run_key = r.run_key AND m.key = ?"
            # One lookup per key: DuckDB sorts NaN above every number, so ascending on the
            # value (or on its negation, for DESC) gives numbers in the asked direction, then
            # NaN, then runs without the metric (NULLS LAST), whatever the direction.
            value = f"-{column}" if order_key.descending else column
            if not parts:
                leading_metric = (ident.key, value)
            parts.append(f"(SELECT {value} {lookup}) ASC NULLS LAST")
            params.append(ident.key)
        elif ident.entity in ("param", "tag"):
            table = "run_params" if ident.entity == "param" else "run_tags"
            # Strings sort in byte order; runs without the key last in both directions.
            parts.append(
                f"(SELECT kv.value FROM {table} kv WHERE kv.run_key = r.run_key AND kv.key = ?) "
                f"{direction} NULLS LAST"
            )
            params.append(ident.key)
        else:
            if ident.key in _RUN_SCHEMA.numeric_attrs:
                column = _RUN_SCHEMA.numeric_attrs[ident.key]
            else:
                column = _RUN_SCHEMA.string_attrs[ident.key][0]
            listed.add(ident.key)
            parts.append(f"r.{column} {direction} NULLS LAST")
    if "start_time" not in listed:
        parts.append("r.start_time DESC NULLS LAST")
    if "run_id" not in listed:
        parts.append("r.run_id ASC")
    return CompiledOrder(
        ", ".join(parts), tuple(params), newest_first=parts[0] == "r.start_time DESC NULLS LAST",
        leading_metric=leading_metric,
        # (A leading metric binds the first parameter; the other keys the rest.)
        rest_sql=", ".join(parts[1:]) if leading_metric else "",
        rest_params=tuple(params[1:]) if leading_metric else (),
    )
