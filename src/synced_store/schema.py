"""Schema declarations: tables, mutators and actions, and the configs that bind code to them.

A schema is pure data (pydantic models and names); it is shared by the server, the Python client
and the browser (Pyodide), so this module imports only the standard library and pydantic.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
import pydantic_core
from pydantic import BaseModel, TypeAdapter

from .app_config import ClientConfig, check_handlers, check_hooks
from .core.numbers import check_numbers
from .errors import SchemaError, UnknownNameError, ValidationError

__all__ = [
    "ActionDef",
    "BackendConfig",
    "ItemDef",
    "Migration",
    "MutatorDef",
    "Schema",
    "Searchable",
    "TableDef",
    "define_backend_config",
    "define_migration",
    "define_schema",
    "item",
    "singleton_table",
    "table",
]

MutatorHandler = Callable[[Any, Any], Awaitable[Any]]
ActionHandler = Callable[[Any, Any], Awaitable[Any]]
_JSON_ADAPTER: TypeAdapter[Any] = TypeAdapter(pydantic.JsonValue)


def _short(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - 3
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class _Validator:
    """Validates a value against a model and returns its plain-JSON form (a fresh copy)."""

    __slots__ = ("_adapter", "_is_model")

    def __init__(self, model: Any) -> None:
        self._adapter: TypeAdapter[Any] = TypeAdapter(model) if model is not None else _JSON_ADAPTER
        self._is_model = isinstance(model, type) and issubclass(model, BaseModel)

    def to_json_value(self, value: Any, what: str) -> Any:
        return self.encode(value, what)[0]

    def encode(self, value: Any, what: str) -> tuple[Any, bytes]:
        """``(plain-JSON value, its compact JSON bytes)``; encoding also proves the strings are
        valid UTF-8 (no lone surrogates)."""
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_unset=True)
        try:
            obj = self._adapter.validate_python(value, strict=False)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid {what}: {_short(exc)}") from None
        try:
            if self._is_model:
                out = obj.model_dump(mode="json", exclude_unset=True)
            else:
                out = self._adapter.dump_python(obj, mode="json")
            data = pydantic_core.to_json(out)
        except pydantic_core.PydanticSerializationError as exc:
            raise ValidationError(f"invalid {what}: not JSON-serialisable ({exc})") from None
        # Walking the value costs its nodes (a chat message: six); a scan of its JSON text would
        # cost every byte of its strings (~40 µs for a 2.6 KB streamed reply).
        check_numbers(out, what)
        return out, data

    def to_model(self, value: Any, what: str) -> Any:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_unset=True)
        try:
            return self._adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid {what}: {_short(exc)}") from None


@dataclass(frozen=True)
class ItemDef:
    """One fixed key of a singleton table and the model of its value."""

    key: str
    model: Any


@dataclass(frozen=True)
class Searchable:
    """How a table is searched (``search`` tool, MCP): the string field holding the text and,
    optionally, the number field that orders results (newest first)."""

    text_field: str
    timestamp_field: str | None = None


@dataclass(frozen=True)
class TableDef:
    """A table declaration: ``table(Model)`` or ``singleton_table(item(...), ...)``."""

    model: Any = None
    items: Mapping[str, ItemDef] | None = None
    #: Set by ``define_schema(tables={name: {"schema": ..., "searchable": {...}}})``.
    searchable: Searchable | None = None
    _validators: dict[str, _Validator] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_singleton(self) -> bool:
        """True for a singleton table (a fixed set of keys, each with its own model)."""
        return self.items is not None

    def validate_value(self, table_name: str, item_key: str, value: Any) -> Any:
        """The validated plain-JSON form of a row value (raises :class:`ValidationError`)."""
        return self.validate_encoded(table_name, item_key, value)[0]

    def validate_encoded(self, table_name: str, item_key: str, value: Any) -> tuple[Any, bytes]:
        """Validate ``value`` for ``item_key`` and return its JSON form (a fresh copy)."""
        if self.items is not None:
            spec = self.items.get(item_key)
            if spec is None:
                raise ValidationError(
                    f"singleton table {table_name!r} has no item {item_key!r} "
                    f"(items: {', '.join(sorted(self.items))})"
                )
            model = spec.model
            cache_key = item_key
        else:
            model = self.model
            cache_key = ""
        validator = self._validators.get(cache_key)
        if validator is None:
            validator = self._validators[cache_key] = _Validator(model)
        return validator.encode(value, f"value for {table_name}/{item_key}")


def table(model: Any = None, *, searchable: Any = None) -> TableDef:
    """Declare a table whose rows all match ``model`` (a pydantic model or any type).

    ``table()`` with no model accepts any JSON value. ``searchable={"text_field": "text",
    "timestamp_field": "createdAt"}`` keeps a full-text index of the rows' text field
    (``store.search``, ``ctx.search``; docs/api.md); the timestamp field orders results.
    """
    tdef = TableDef(model=model)
    search = _searchable("table()", searchable)
    if search is None:
        return tdef
    _check_search_fields("table()", tdef, search)
    return TableDef(model=model, searchable=search)


def item(key: str, model: Any) -> ItemDef:
    """Declare one fixed key of a singleton table."""
    if not isinstance(key, str) or not key:
        raise SchemaError("item(key, model): key must be a non-empty string")
    return ItemDef(key=key, model=model)


def singleton_table(*items: ItemDef) -> TableDef:
    """Declare a table with a fixed set of keys, each with its own value model."""
    if not items or not all(isinstance(i, ItemDef) for i in items):
        raise SchemaError("singleton_table() takes one or more item(key, model) arguments")
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        raise SchemaError(f"singleton_table(): duplicate item keys in {keys}")
    return TableDef(items={i.key: i for i in items})


@dataclass(frozen=True)
class MutatorDef:
    """A mutator declaration: its name, description and input model."""

    name: str
    input: Any
    description: str = ""
    _validator: _Validator = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_validator", _Validator(self.input))

    def parse_input(self, args: Any) -> Any:
        """Validate wire arguments and return the value passed to the handler."""
        return self._validator.to_model(args, f"input for mutator {self.name!r}")

    def input_to_json(self, args: Any) -> Any:
        """Validate call-site arguments and return their JSON form (what travels on the wire)."""
        return self._validator.to_json_value(args, f"input for mutator {self.name!r}")

    def input_encode(self, args: Any) -> tuple[Any, bytes]:
        """:meth:`input_to_json` and its compact JSON bytes."""
        return self._validator.encode(args, f"input for mutator {self.name!r}")


@dataclass(frozen=True)
class ActionDef:
    """An action declaration: name, description, input and output models."""

    name: str
    input: Any
    output: Any = None
    description: str = ""
    _in: _Validator = field(init=False, compare=False, repr=False)
    _out: _Validator = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_in", _Validator(self.input))
        object.__setattr__(self, "_out", _Validator(self.output))

    def parse_input(self, args: Any) -> Any:
        """Validate an action's input and return the value passed to the handler."""
        return self._in.to_model(args, f"input for action {self.name!r}")

    def input_to_json(self, args: Any) -> Any:
        """Validate an action's input and return its JSON form."""
        return self._in.to_json_value(args, f"input for action {self.name!r}")

    def input_encode(self, args: Any) -> tuple[Any, bytes]:
        """:meth:`input_to_json` and its compact JSON bytes."""
        return self._in.encode(args, f"input for action {self.name!r}")

    def output_to_json(self, value: Any) -> Any:
        """Validate an action's return value and return its JSON form."""
        return self._out.to_json_value(value, f"output of action {self.name!r}")


PendingMigrator = Callable[[Any, Callable[[str, Any], None]], None]


def _emitter(out: list[tuple[str, Any]]) -> Callable[[str, Any], None]:
    def emit(name: str, args: Any) -> None:
        out.append((name, args))

    return emit


@dataclass(frozen=True)
class Migration:
    """One version step: ``migrate_data(ctx)`` rewrites stored rows on the server (a system
    mutation, run once when the instance first opens with the new schema), and
    ``migrate_pending_mutation[name](args, emit)`` rewrites a mutation made by an older client:
    call ``emit(name, args)`` once to transform or rename, several times to expand, never to
    drop it. Mutators without an entry pass through unchanged."""

    migrate_data: Callable[[Any], Awaitable[None]] | None = None
    migrate_pending_mutation: Mapping[str, PendingMigrator] = field(default_factory=dict)


def define_migration(
    *,
    migrate_data: Callable[[Any], Awaitable[None]] | None = None,
    migrate_pending_mutation: Mapping[str, PendingMigrator] | None = None,
) -> Migration:
    """Declare one schema version step (register it as ``migrations={"1to2": ...}``)."""
    if migrate_data is not None and not inspect.iscoroutinefunction(migrate_data):
        raise SchemaError("migrate_data must be an async function")
    return Migration(migrate_data, dict(migrate_pending_mutation or {}))


@dataclass(frozen=True)
class Schema:
    """A complete schema: version, tables, mutators and actions. Built by :func:`define_schema`."""

    schema_version: int
    tables: Mapping[str, TableDef]
    mutators: Mapping[str, MutatorDef]
    actions: Mapping[str, ActionDef]
    #: Version steps keyed by the version they start from.
    migrations: Mapping[int, Migration] = field(default_factory=dict)
    #: Windowed tables: ``{table: N}``, a new client first receives the latest N rows (by
    #: sort key) of each, older rows on demand (docs/api.md, "Windowed sync").
    pull_windows: Mapping[str, int] = field(default_factory=dict)
    #: Bytes of windowed rows a client's first catch-up carries at most (the newest first).
    initial_pull_max_bytes: int = 1 << 20
    #: A client's storage budget for windowed rows: past 1.2 x it, the oldest are evicted.
    pull_max_bytes: int = 4 << 20

    def can_migrate_from(self, version: int) -> bool:
        """True if every step from ``version`` up to :attr:`schema_version` is declared."""
        return version <= self.schema_version and all(
            v in self.migrations for v in range(version, self.schema_version)
        )

    def migrate_mutation(self, name: str, args: Any, from_version: int) -> list[tuple[str, Any]]:
        """The mutations a mutation made under ``from_version`` becomes under this schema."""
        todo = [(name, args)]
        for v in range(from_version, self.schema_version):
            step = self.migrations[v]
            out: list[tuple[str, Any]] = []
            for n, a in todo:
                fn = step.migrate_pending_mutation.get(n)
                if fn is None:
                    out.append((n, a))
                else:
                    fn(a, _emitter(out))
            todo = out
        return todo

    def table_def(self, name: str) -> TableDef:
        """The declaration of table ``name``; raises :class:`UnknownNameError`."""
        try:
            return self.tables[name]
        except KeyError:
            raise UnknownNameError(f"unknown table {name!r}") from None

    def mutator(self, name: str) -> MutatorDef:
        """The declaration of mutator ``name``; raises :class:`UnknownNameError`."""
        try:
            return self.mutators[name]
        except KeyError:
            raise UnknownNameError(f"unknown mutator {name!r}") from None

    def action(self, name: str) -> ActionDef:
        """The declaration of action ``name``; raises :class:`UnknownNameError`."""
        try:
            return self.actions[name]
        except KeyError:
            raise UnknownNameError(f"unknown action {name!r}") from None


_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK or len(name) > 64:
        raise SchemaError(f"{kind} name {name!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return name


def _decl(kind: str, name: str, spec: Any) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    raise SchemaError(f"{kind} {name!r} must be declared as a dict with an 'input' model")


def _field_name_ok(name: Any) -> bool:
    """A searchable field is a non-empty top-level key without ``"`` or ``\\``."""
    return isinstance(name, str) and 0 < len(name) <= 64 and not {'"', "\\"} & set(name)


def _searchable(table_name: str, spec: Any) -> Searchable | None:
    """``{"text_field": ..., "timestamp_field": ...}`` (camelCase accepted) as a Searchable."""
    if spec is None or isinstance(spec, Searchable):
        return spec
    if not isinstance(spec, Mapping):
        raise SchemaError(f"table {table_name!r}: searchable must be a dict with a text_field")
    text = spec.get("text_field", spec.get("textField"))
    stamp = spec.get("timestamp_field", spec.get("timestampField"))
    if not _field_name_ok(text) or not (stamp is None or _field_name_ok(stamp)):
        raise SchemaError(
            f"table {table_name!r}: searchable needs a text_field (str) and an optional "
            "timestamp_field (str), names of top-level fields without '\"' or '\\\\'"
        )
    return Searchable(text, stamp)


def _check_search_fields(table_name: str, tdef: TableDef, search: Searchable) -> None:
    if tdef.is_singleton:
        raise SchemaError(f"table {table_name!r}: a singleton table cannot be searchable")
    fields = getattr(tdef.model, "model_fields", None)
    if fields is None:
        return  # not a pydantic model: nothing to check the names against
    for f in (search.text_field, search.timestamp_field):
        if f is not None and f not in fields:
            raise SchemaError(
                f"table {table_name!r}: searchable field {f!r} is not a field of "
                f"{tdef.model.__name__}"
            )


def define_schema(
    schema_version: int,
    tables: Mapping[str, Any],
    mutators: Mapping[str, Any] | None = None,
    actions: Mapping[str, Any] | None = None,
    migrations: Mapping[str, Migration] | None = None,
    pull_windows: Mapping[str, int | None] | None = None,
    initial_pull_max_bytes: int = 1 << 20,
    pull_max_bytes: int = 4 << 20,
) -> Schema:
    """Declare a schema.

    Args:
        schema_version: version of the persisted data / mutation contract. A client whose
            version differs is refused (close code 4005) and clears its local data.
        tables: ``{name: {"schema": table(Model)}}`` or ``{name: table(Model)}``; add
            ``"searchable": {"text_field": "text", "timestamp_field": "createdAt"}`` to make a
            table searchable by the ``search`` tool (:mod:`synced_store.tools`).
        mutators: ``{name: {"description": str, "input": Model}}``.
        actions: ``{name: {"description": str, "input": Model, "output": Model}}``.
        migrations: ``{"1to2": define_migration(...), "2to3": ...}``, one per version step.
        pull_windows: ``{table: N}`` (N >= 1, or None: the whole table): a new client first
            receives only the latest N rows of the table by ``(sort_key, item_key)`` and
            pages back on demand (docs/api.md, "Windowed sync").
        initial_pull_max_bytes: at most this many bytes of windowed rows in a client's first
            catch-up (at least one row per windowed table travels).
        pull_max_bytes: a client's storage budget for windowed rows; above 1.2 x it, the
            oldest rows no pending mutation read are evicted (re-fetched on demand).
    """
    if (
        not isinstance(schema_version, int)
        or isinstance(schema_version, bool)
        or schema_version < 0
    ):
        raise SchemaError("schema_version must be a non-negative integer")
    tdefs: dict[str, TableDef] = {}
    for name, spec in tables.items():
        _check_name("table", name)
        search: Searchable | None = None
        if isinstance(spec, Mapping):
            search = _searchable(name, spec.get("searchable"))
            spec = spec.get("schema")
        if not isinstance(spec, TableDef):
            raise SchemaError(f"table {name!r}: use table(Model) or singleton_table(item(...))")
        search = search or spec.searchable
        if search is not None:
            _check_search_fields(name, spec, search)
            spec = TableDef(model=spec.model, items=spec.items, searchable=search)
        tdefs[name] = spec
    mdefs: dict[str, MutatorDef] = {}
    for name, spec in (mutators or {}).items():
        _check_name("mutator", name)
        d = _decl("mutator", name, spec)
        mdefs[name] = MutatorDef(
            name=name, input=d.get("input"), description=d.get("description", "")
        )
    adefs: dict[str, ActionDef] = {}
    for name, spec in (actions or {}).items():
        _check_name("action", name)
        d = _decl("action", name, spec)
        adefs[name] = ActionDef(
            name=name,
            input=d.get("input"),
            output=d.get("output"),
            description=d.get("description", ""),
        )
    steps: dict[int, Migration] = {}
    for key, mig in (migrations or {}).items():
        frm, _, to = str(key).partition("to")
        if not (frm.isdigit() and to.isdigit() and int(to) == int(frm) + 1):
            raise SchemaError(f"migration key {key!r} must look like '1to2' (one version step)")
        if int(to) > schema_version:
            raise SchemaError(f"migration {key!r} goes beyond schema_version {schema_version}")
        if not isinstance(mig, Migration):
            raise SchemaError(f"migration {key!r} must be built with define_migration()")
        steps[int(frm)] = mig
    return Schema(
        schema_version=schema_version,
        tables=tdefs,
        mutators=mdefs,
        actions=adefs,
        migrations=steps,
        pull_windows=_windows(tdefs, pull_windows),
        initial_pull_max_bytes=_budget("initial_pull_max_bytes", initial_pull_max_bytes),
        pull_max_bytes=_budget("pull_max_bytes", pull_max_bytes),
    )


def _windows(tdefs: Mapping[str, TableDef], spec: Mapping[str, Any] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, n in (spec or {}).items():
        if name not in tdefs or tdefs[name].is_singleton:
            raise SchemaError(f"pull_windows: {name!r} is not a declared (non-singleton) table")
        if n is None or n == "all":
            continue
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100_000:
            raise SchemaError(f"pull_windows[{name!r}] must be an int in 1..100000 or None")
        out[name] = n
    return out


def _budget(name: str, n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1024:
        raise SchemaError(f"{name} must be an int of at least 1024 (bytes)")
    return int(n)


@dataclass(frozen=True)
class BackendConfig(ClientConfig):
    """A schema bound to its mutator and action handlers and platform services."""

    actions: Mapping[str, ActionHandler] = field(default_factory=dict)
    services: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    #: What AI agents may use (:mod:`synced_store.tools`, MCP): ``{"mutators": (...),
    #: "actions": (...), "tables": (...)}``. Empty: nothing is exposed.
    expose: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: System hooks by name (``on_init``, ``on_add_users``, ``on_remove_users``), run by the
    #: server in the writer's transaction with ``ctx.is_system`` (``server/members.py``).
    hooks: Mapping[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    #: Only members (rows of ``$users``) may open an instance; its creator is the first.
    members_only: bool = False
    #: Every user allowed to open an instance becomes a member when it connects.
    auto_join: bool = False


EXPOSE_KINDS = ("mutators", "actions", "tables")


def check_expose(schema: Schema, expose: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Validate an ``expose`` mapping against ``schema``: its keys are among
    ``mutators`` / ``actions`` / ``tables`` and every name is declared. Returns it with tuples."""
    out: dict[str, tuple[str, ...]] = {}
    if expose is None:
        return out
    if not isinstance(expose, Mapping):
        raise SchemaError("expose must be a dict: {'mutators': [...], 'actions': [...], ...}")
    declared = {"mutators": schema.mutators, "actions": schema.actions, "tables": schema.tables}
    for kind, names in expose.items():
        if kind not in declared:
            raise SchemaError(f"expose: unknown key {kind!r} (use {', '.join(EXPOSE_KINDS)})")
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise SchemaError(f"expose[{kind!r}] must be a list of names")
        unknown = sorted(set(names) - set(declared[kind]))
        if unknown:
            raise SchemaError(f"expose[{kind!r}]: not declared in the schema: {', '.join(unknown)}")
        out[kind] = tuple(dict.fromkeys(names))
    return out


def define_backend_config(
    schema: Schema,
    mutators: Mapping[str, MutatorHandler],
    actions: Mapping[str, ActionHandler] | None = None,
    services: Mapping[str, Callable[..., Any]] | None = None,
    expose: Mapping[str, Any] | None = None,
    *,
    hooks: Mapping[str, Callable[..., Awaitable[None]]] | None = None,
    members_only: bool = False,
    auto_join: bool = False,
) -> BackendConfig:
    """Bind handlers to a schema. Every declared mutator needs an async handler, and vice versa.

    ``services`` is the registry behind ``ctx.platform.call(name, input)`` (server only).
    Clients take the same config (actions and services are ignored there). ``expose`` lists
    the mutators, actions and tables AI agents may use as tools (``synced_store.tools``,
    ``synced-store mcp``, ``create_app(..., mcp=True)``); nothing is exposed by default.

    ``hooks``: ``{"on_init": fn(ctx), "on_add_users": fn(ctx, user_ids),
    "on_remove_users": fn(ctx, user_ids)}``, run by the server in the writer's transaction
    with ``ctx.is_system`` True. ``members_only``: only the members of an instance (its
    ``$users`` table) may open it; the user whose connection creates it is its first member
    (role ``"owner"``). ``auto_join``: every user ``authorize`` lets in becomes a member when
    it connects. See ``synced_store.server.members``.
    """
    check_handlers(schema, mutators, actions or {})
    return BackendConfig(
        schema=schema,
        mutators=dict(mutators),
        actions=dict(actions or {}),
        services=dict(services or {}),
        expose=check_expose(schema, expose),
        hooks=check_hooks(hooks),
        members_only=bool(members_only),
        auto_join=bool(auto_join),
    )
