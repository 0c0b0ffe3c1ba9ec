"""Refuses statements that read or write the configured tables: a policy plugin in Python.

Config `tables` (comma-separated; `schema.table` matches only that schema, a bare name matches
the table in any schema) and `exempt_groups` (comma-separated groups the rule does not apply
to). Built with componentize-py against ../../wit (see `cargo xtask plugins`).
"""

from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Decision_Allow,
    Decision_Deny,
    Error_InvalidConfig,
    Reuse,
    Session,
    Statement,
    Verdict,
)
from componentize_py_types import Err


def config_list(key: str) -> list[str]:
    value = host.config(key) or ""
    return [item.strip().lower() for item in value.split(",") if item.strip()]


# This instance serves one session: what `open` learns holds for all its statements. (Module
# state, not attributes: the export class may be instantiated for each call.)
TABLES: list[str] = []
EXEMPT = False


class Policy(exports.Policy):
    def open(self, session: Session) -> None:
        global TABLES, EXEMPT
        TABLES = config_list("tables")
        if not TABLES:
            raise Err(Error_InvalidConfig("config `tables` names no table"))
        exempt = set(config_list("exempt_groups"))
        EXEMPT = any(group.lower() in exempt for group in session.groups)

    def evaluate(self, statement: Statement) -> Verdict:
        # Reads only the session and the analysed tables: the same answer for the whole shape.
        if EXEMPT:
            return Verdict(Decision_Allow(), Reuse.SAME_SHAPE)
        for table in statement.tables_read + statement.tables_written:
            name = table.name.lower()
            qualified = f"{table.schema.lower()}.{name}" if table.schema else None
            for rule in TABLES:
                if rule == name or rule == qualified:
                    shown = qualified or name
                    return Verdict(
                        Decision_Deny(f"table {shown} is off limits"), Reuse.SAME_SHAPE
                    )
        return Verdict(Decision_Allow(), Reuse.SAME_SHAPE)
