"""
Typed access to a config file's JSON objects, and the one-line ``ConfigError``.

Every section module reads its keys through a ``Reader``, so that each error names the file, the
key path and what is allowed in the same words. A section's keys are declared once, as fields of
its frozen attrs class made with ``integer``/``number``/``text``/``flag``/``strings``/``setting``:
the field holds the default and how the key is checked, and ``read_settings`` reads them all.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Type, TypeVar, Union

import attrs

#: What a key that ilchat only keeps (never reads) may hold: any JSON value.
JSONValue = Union[None, bool, int, float, str, List[Any], Dict[str, Any]]

#: ``default`` for a required key.
MISSING: Any = object()

#: The metadata key of a field made by ``setting``.
_SETTING = "ilchat.config"

T = TypeVar("T")


class ConfigError(Exception):
    """
    A configuration file cannot be used.

    ``str()`` is a single line meant for stderr: the plugin prints it and exits with status 1.
    """

    def __init__(self, message: str) -> None:
        # One line whatever the cause: a stray newline in a value must not split the message.
        super().__init__(" ".join(str(message).split()))

    def __str__(self) -> str:
        return str(self.args[0])


def show(value: Any, limit: int = 80) -> str:
    """Render a config value the way it appears in the JSON file (cut short after C{limit})."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = object.__repr__(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Reader:
    """
    Typed access to one JSON object of a config file, with errors that name the file and key path.

    ``get_*`` return ``default`` when the key is absent (or ``null``); when no default is given
    the key is required.
    """

    def __init__(self, path: str, data: Dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def key_path(self, key: str) -> str:
        return self.prefix + key

    def error(self, key: str, value: Any, allowed: str) -> ConfigError:
        """Build the one-line error for a bad value."""
        return ConfigError(
            f"{self.path}: {self.key_path(key)} = {show(value)} is not allowed; {allowed}"
        )

    def missing(self, key: str, allowed: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.key_path(key)} is required; {allowed}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _raw(self, key: str, default: Any, allowed: str) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is MISSING:
                raise self.missing(key, allowed)
            return MISSING
        return value

    def section(self, key: str, required: bool = False) -> "Reader":
        """A reader for a nested object; an absent or ``null`` section reads as empty."""
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.missing(key, "expected a JSON object")
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, value, "expected a JSON object")
        return Reader(self.path, value, self.key_path(key) + ".")

    def item(self, data: Dict[str, Any], where: str) -> "Reader":
        """A reader for one object of a list (``where`` is e.g. ``"webirc[0]."``)."""
        return Reader(self.path, data, self.key_path(where))

    def get_str(
        self,
        key: str,
        default: Any = MISSING,
        choices: Optional[Sequence[str]] = None,
        allow_empty: bool = True,
    ) -> Any:
        if choices is not None:
            allowed = "one of " + ", ".join(c if c else '""' for c in choices)
        else:
            allowed = "expected a non-empty string" if not allow_empty else "expected a string"
        value = self._raw(key, default, allowed)
        if value is MISSING:
            return default
        if not isinstance(value, str):
            raise self.error(key, value, allowed)
        if choices is not None and value not in choices:
            raise self.error(key, value, allowed)
        if not allow_empty and not value:
            raise self.error(key, value, allowed)
        return value

    def get_int(
        self,
        key: str,
        default: Any = MISSING,
        minimum: Optional[int] = None,
        maximum: Optional[int] = None,
        allow_str: bool = False,
    ) -> Any:
        """
        An integer; ``allow_str`` also takes a string of digits, as PHP sometimes writes numbers
        from form fields as strings. A JSON ``true`` is never read as 1.
        """
        if minimum is not None and maximum is not None:
            allowed = f"expected an integer from {minimum} to {maximum}"
        elif minimum is not None:
            allowed = f"expected an integer of at least {minimum}"
        else:
            allowed = "expected an integer"
        value = self._raw(key, default, allowed)
        if allow_str and value == "":
            # PHP writes "" for a number the admin left empty.
            if default is MISSING:
                raise self.missing(key, allowed)
            return default
        if value is MISSING:
            return default
        number: Optional[int] = None
        if type(value) is int:
            number = value
        elif type(value) is float and value.is_integer():
            number = int(value)
        elif allow_str and isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
            number = int(value)
        if number is None:
            raise self.error(key, value, allowed)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.error(key, value, allowed)
        return number

    def get_float(self, key: str, default: Any = MISSING, minimum: Optional[float] = None) -> Any:
        allowed = "expected a number" + (f" of at least {minimum}" if minimum is not None else "")
        value = self._raw(key, default, allowed)
        if value is MISSING:
            return default
        if type(value) not in (int, float):
            raise self.error(key, value, allowed)
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise self.error(key, value, allowed + " (this one is too large)")
        if not math.isfinite(number) or (minimum is not None and number < minimum):
            raise self.error(key, value, allowed)
        return number

    def get_bool(self, key: str, default: Any = MISSING, lenient: bool = False) -> Any:
        """
        A boolean; ``lenient`` also takes 0/1 and "0"/"1", which PHP writes for some flags.
        """
        allowed = "expected true or false"
        value = self._raw(key, default, allowed)
        if value is MISSING:
            return default
        if type(value) is bool:
            return value
        if lenient and (type(value) is int or isinstance(value, str)) and str(value) in ("0", "1"):
            return str(value) == "1"
        raise self.error(key, value, allowed)

    def get_list(self, key: str, default: Any = MISSING, item_type: type = str) -> Any:
        allowed = f"expected a list of {item_type.__name__}"
        value = self._raw(key, default, allowed)
        if value is MISSING:
            return default
        if not isinstance(value, list) or not all(type(v) is item_type for v in value):
            raise self.error(key, value, allowed)
        return tuple(value)

    def get_path(self, key: str, default: Any = MISSING) -> Any:
        """A file path; relative paths are taken from the config file's folder. ``""`` is absent."""
        value = self.get_str(key, default)
        if value is default or value == "":
            return default
        self.check_no_nul(key, value)
        return self.resolve(value)

    def check_no_nul(self, key: str, path: str) -> None:
        """No system call takes a path with a NUL: refuse it here rather than with a traceback."""
        if "\0" in path:
            raise self.error(key, path, "expected a file path without NUL characters")

    def resolve(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.folder, os.path.expanduser(value)))

    def check_readable(self, key: str, path: str) -> None:
        """Refuse a file that is missing or unreadable now, not at the first TLS handshake."""
        if not os.path.isfile(path):
            raise ConfigError(f"{self.path}: {self.key_path(key)}: File does not exist: {path}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{self.path}: {self.key_path(key)}: File is not readable: {path}")


# --- declaring a section's keys -------------------------------------------------------------------

#: How a key is read: ``read(reader, key, default) -> value``.
ReadKey = Callable[[Reader, str, Any], Any]


def setting(
    default: Any, read: ReadKey, key: Optional[str] = None, within: Optional[str] = None
) -> Any:
    """
    A field of a section class whose key ``read_settings`` reads with C{read}: C{key} when the
    JSON name differs from the field's, C{within} for a nested object (``irc`` → ``limits``).
    """
    return attrs.field(default=default, metadata={_SETTING: (read, key, within)})


def integer(
    default: Optional[int], minimum: Optional[int] = None, maximum: Optional[int] = None,
    key: Optional[str] = None, within: Optional[str] = None,
) -> Any:
    return setting(
        default, lambda r, k, d: r.get_int(k, d, minimum=minimum, maximum=maximum), key, within
    )


def number(
    default: float, minimum: Optional[float] = None, key: Optional[str] = None,
    within: Optional[str] = None,
) -> Any:
    return setting(default, lambda r, k, d: r.get_float(k, d, minimum=minimum), key, within)


def text(
    default: Optional[str], choices: Optional[Sequence[str]] = None, allow_empty: bool = True,
    key: Optional[str] = None, within: Optional[str] = None,
) -> Any:
    return setting(
        default, lambda r, k, d: r.get_str(k, d, choices=choices, allow_empty=allow_empty), key,
        within,
    )


def flag(default: bool, key: Optional[str] = None, within: Optional[str] = None) -> Any:
    return setting(default, lambda r, k, d: r.get_bool(k, d), key, within)


def strings(key: Optional[str] = None, within: Optional[str] = None) -> Any:
    """A list of strings, empty by default."""
    return setting((), lambda r, k, d: r.get_list(k, d), key, within)


def default_of(cls: type, name: str) -> Any:
    """The default of field C{name} of the attrs class C{cls} (where a parser needs it)."""
    return getattr(attrs.fields(cls), name).default


def read_settings(cls: Type[T], reader: Reader, **given: Any) -> T:
    """
    Build C{cls} from C{reader}: every field declared with ``setting`` is read in declaration
    order, unless the caller C{given} it (keys with rules beyond one getter); the others keep
    their defaults.
    """
    values: Dict[str, Any] = {}
    for field in attrs.fields(cls):
        spec = field.metadata.get(_SETTING)
        if spec is None or field.name in given:
            continue
        read, key, within = spec
        source = reader.section(within) if within else reader
        values[field.name] = read(source, key or field.name, field.default)
    return cls(**values, **given)  # type: ignore[call-arg]
