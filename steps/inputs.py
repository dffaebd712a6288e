"""Read and validate a study's input CSV before any model time is spent.

:func:`load_study_table` either returns a fully typed table (columns in the input
model's order, derived columns filled) or raises :class:`InputValidationError`
listing every problem with file, row, line and column.
Rows are numbered from 1 (the first data row); lines are physical file lines.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
from pydantic import ValidationError

from steps.derive import DerivationError, derive
from steps.errors import InputValidationError
from steps.store import read_url
from steps.studies import StudySpec

_BINARY_SIGNATURES = {
    b"PK\x03\x04": "an Excel workbook or zip archive (export it as CSV)",
    b"PAR1": "a Parquet file",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook (export it as CSV)",
    b"%PDF": "a PDF document",
}
_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class StudyTable:
    """A validated study input: the typed rows and where they came from."""

    path: str
    sha256: str
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _decode(path: str, data: bytes, encoding: str) -> str:
    for signature, what in _BINARY_SIGNATURES.items():
        if data.startswith(signature):
            raise InputValidationError(path, [f"this is not a CSV file: it looks like {what}"])
    if b"\x00" in data[:4096]:
        raise InputValidationError(path, ["this is not a CSV text file: it contains binary (NUL) bytes"])
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise InputValidationError(
            path,
            [
                f"line {line}: byte 0x{bad} is not valid {encoding}; the file has another encoding "
                f"(often Windows-1252 from Excel). Re-save it as UTF-8, or pass --encoding cp1252"
            ],
        ) from exc
    except LookupError as exc:
        raise InputValidationError(path, [f"unknown encoding {encoding!r}"]) from exc


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` with their line ends, lazily (no second copy of a large file); a file with
    only carriage returns as line ends (old Mac) is read through StringIO, which knows them."""
    if "\n" not in text:
        yield from io.StringIO(text, newline="")
        return
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def missing_column_message(column: str, header: list[str]) -> str:
    """A missing required column, with the closest header name when one looks like a misspelling."""
    close = difflib.get_close_matches(column, header, n=1, cutoff=0.6)
    hint = f" (found {close[0]!r} instead: the study files spell it {column!r}; rename the column)" if close else ""
    return f"header: required column {column!r} is missing{hint}"


def cell_problem(row_no: int, line: int, column: str, message: str) -> str:
    """One problem message naming row (from 1), physical line and column."""
    return f"row {row_no} (line {line}), column {column!r}: {message}"


def validation_problems(exc: ValidationError, row_no: int, line: int) -> list[str]:
    """One :func:`cell_problem` per error pydantic found in a row (the offending value quoted)."""
    problems = []
    for err in exc.errors():
        column = str(err["loc"][0]) if err["loc"] else "(row)"
        got = f" (got {err['input']!r})" if err["loc"] else ""
        problems.append(cell_problem(row_no, line, column, f"{err['msg'].removeprefix('Value error, ')}{got}"))
    return problems


@dataclass
class CsvFile:
    """An opened CSV file: its header (names stripped), and its non-blank records read lazily.

    ``records`` yields (row number from 1, line number, cells); a malformed record raises
    ``csv.Error`` while iterating (the caller reports it with the problems found so far).
    """

    path: str
    sha256: str
    header: list[str]
    reader: Any

    def records(self) -> Iterator[tuple[int, int, list[str]]]:
        """(row number from 1, line number, cells) of each non-blank record, read lazily."""
        row_no = 0
        for cells in self.reader:
            if any(c.strip() for c in cells):
                row_no += 1
                yield row_no, self.reader.line_num, cells


def open_csv(path: str | Path, encoding: str = "utf-8", s3_endpoint: Optional[str] = None) -> CsvFile:
    """Read ``path`` (a file path, ``file://`` or ``s3://`` URL) and parse its header (delimiter sniffed from it);
    InputValidationError when it cannot be read, is not text CSV, or is empty."""
    path_str = str(path)
    try:
        data = read_url(path_str, s3_endpoint)
    except ValueError as exc:  # an S3 key with characters the store refuses
        raise InputValidationError(path_str, [str(exc)]) from exc
    except IsADirectoryError as exc:
        raise InputValidationError(path_str, ["this is a folder, not a CSV file: give the path of the file itself"]) from exc
    except OSError as exc:
        raise InputValidationError(path_str, [f"cannot read the file: {exc.strerror or exc}"]) from exc
    if data is None:
        raise InputValidationError(path_str, ["file not found"])
    sha256 = hashlib.sha256(data).hexdigest()
    text = _decode(path_str, data, encoding)
    del data  # from here on only the text and the typed columns are held (100,000 rows stay well under 400 MB)
    if not text.strip():
        raise InputValidationError(path_str, ["the file is empty; expected a header line and data rows"])

    newline = text.find("\n")
    reader = csv.reader(_lines(text), delimiter=_delimiter(text[: newline if newline >= 0 else len(text)]))
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as exc:
        raise InputValidationError(path_str, [f"line {reader.line_num}: not valid CSV ({exc})"]) from exc
    return CsvFile(path_str, sha256, header, reader)


def load_study_table(path: str | Path, spec: StudySpec, encoding: str = "utf-8", s3_endpoint: Optional[str] = None) -> StudyTable:
    """Read ``path`` (a file path, ``file://`` or ``s3://`` URL) as study ``spec``'s input; raise InputValidationError on any problem."""
    file = open_csv(path, encoding, s3_endpoint)
    path_str, header, sha256, reader = file.path, file.header, file.sha256, file.reader

    required = spec.file_columns
    optional = {n for n, f in spec.input_model.model_fields.items() if not f.is_required()}
    unexpected = [h for h in header if h not in required]
    problems = [missing_column_message(c, unexpected) for c in required if c not in header and c not in optional]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    problems += [f"header: column {h!r} appears more than once" for h in duplicated]
    if problems:
        raise InputValidationError(path_str, problems)
    warnings = [f"column {h!r} is not used by study {spec.number} and is ignored" for h in unexpected]

    position = {h: i for i, h in enumerate(header)}
    fields = list(spec.input_model.model_fields)
    columns: dict[str, list] = {name: [] for name in fields}  # column-wise: no dict per row
    seen: dict[bytes, tuple[int, int]] = {}  # a 16-byte digest per row, not a copy of its text
    row_no = 0
    try:
        for row_no, line, cells in file.records():
            if len(cells) != len(header):
                problems.append(f"row {row_no} (line {line}): has {len(cells)} fields, expected {len(header)} as in the header")
                continue
            raw = {c: cells[position[c]] for c in required if c in position}
            row_problems = [
                cell_problem(row_no, line, c, "is empty; expected text")
                for c, v in raw.items()
                if not v.strip() and c not in optional
            ]
            values: dict = dict(raw)
            for column, rule in spec.derived.items():
                if rule["source"] in raw and raw[rule["source"]].strip():
                    try:
                        values[column] = derive(rule, raw)
                    except DerivationError as exc:
                        row_problems.append(cell_problem(row_no, line, rule["source"], str(exc)))
            if row_problems:
                problems += row_problems
                continue
            try:
                typed = spec.input_model.model_validate(values)
            except ValidationError as exc:
                problems += validation_problems(exc, row_no, line)
                continue
            key = hashlib.blake2b("\x1f".join(raw.values()).encode("utf-8"), digest_size=16).digest()
            if key in seen:
                first_row, first_line = seen[key]
                problems.append(f"row {row_no} (line {line}): exact duplicate of row {first_row} (line {first_line})")
                continue
            seen[key] = (row_no, line)
            for name, value in typed.model_dump().items():
                columns[name].append(value)
    except csv.Error as exc:
        raise InputValidationError(path_str, [*problems, f"line {reader.line_num}: not valid CSV ({exc})"]) from exc

    if not row_no:
        raise InputValidationError(path_str, ["the file has a header but no data rows"])
    if problems:
        raise InputValidationError(path_str, problems)
    frame = pd.DataFrame(columns, columns=fields)
    return StudyTable(path=path_str, sha256=sha256, frame=frame, warnings=warnings)
