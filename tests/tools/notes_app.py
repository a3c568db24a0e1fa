"""A small app for the tool tests: notes (searchable), private drafts, an action with a
non-object output, a mutator with a non-object input, and an owner-only delete."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from synced_store import PermissionDeniedError, define_backend_config, define_schema, table


class Note(BaseModel):
    id: str
    text: str
    createdAt: int
    owner: str


class Draft(BaseModel):
    text: str


class AddNote(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=500)
    createdAt: int = 0


class NoteId(BaseModel):
    id: str


class SaveDraft(BaseModel):
    id: str
    text: str


async def add_note(ctx: Any, input: AddNote) -> None:
    if ctx.is_server and "forbidden" in input.text:  # a check only the server makes
        raise PermissionDeniedError("the server refuses forbidden words")
    notes = ctx.table("notes")
    if await notes.has(input.id):
        return
    row = {"id": input.id, "text": input.text, "createdAt": input.createdAt, "owner": ctx.user_id}
    await notes.set(input.id, row, sort_key=f"{input.createdAt:012d}")


async def delete_note(ctx: Any, input: NoteId) -> None:
    note = await ctx.table("notes").get(input.id)
    if note is None:
        return
    if note["owner"] != ctx.user_id:
        raise PermissionDeniedError(f"only {note['owner']} may delete note {input.id}")
    await ctx.table("notes").delete(input.id)


async def shout(ctx: Any, input: str) -> None:
    await ctx.table("shouts").set("last", {"text": input.upper()})


async def save_draft(ctx: Any, input: SaveDraft) -> None:
    await ctx.private_of_user(ctx.user_id).table("drafts").set(input.id, {"text": input.text})


async def word_count(ctx: Any, input: NoteId) -> int:
    note = await ctx.table("notes").get(input.id)
    if note is None:
        raise ValueError(f"no note {input.id}")
    return len(note["text"].split())


schema = define_schema(
    schema_version=1,
    tables={
        "notes": {
            "schema": table(Note),
            "searchable": {"text_field": "text", "timestamp_field": "createdAt"},
        },
        "drafts": table(Draft),
        "shouts": table(),
        "secrets": table(),
    },
    mutators={
        "addNote": {"description": "Add a note (a no-op if the id exists).", "input": AddNote},
        "deleteNote": {"description": "Delete one of your notes.", "input": NoteId},
        "shout": {"description": "Shout a text.", "input": str},
        "saveDraft": {"description": "Save a private draft.", "input": SaveDraft},
    },
    actions={
        "wordCount": {"description": "Count the words of a note.", "input": NoteId, "output": int}
    },
)

EXPOSE = {
    "mutators": ["addNote", "deleteNote", "shout", "saveDraft"],
    "actions": ["wordCount"],
    "tables": ["notes", "drafts", "shouts"],
}

backend = define_backend_config(
    schema=schema,
    mutators={
        "addNote": add_note,
        "deleteNote": delete_note,
        "shout": shout,
        "saveDraft": save_draft,
    },
    actions={"wordCount": word_count},
    expose=EXPOSE,
)
