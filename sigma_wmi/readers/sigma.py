"""Sigma YAML → model, on top of pySigma's rule parser.

pySigma resolves modifiers, `1 of selection*` and value lists; this module turns
its condition tree into our expression tree with canonical field names and
unescaped patterns, and fills in file and line for every error.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Mapping
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaConditionError, SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
)

from sigma_wmi.catalog import catalog
from sigma_wmi.errors import Diagnostic, Level, Origin, SigmaWmiError
from sigma_wmi.limits import MAX_VALUES_PER_ITEM, MAX_VALUES_PER_RULE
from sigma_wmi.model import (
    And,
    Expr,
    LogSource,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    PatternPart,
    Regex,
    RelatedRule,
    Rule,
    Technique,
    Wildcard,
    any_of,
    normalize,
    patterns_match,
    string_match,
)
from sigma_wmi.readers.values import DocumentValues
from sigma_wmi.readers.yamlsource import locate, yaml_lines

_WILDCARDS = {SpecialChars.WILDCARD_MULTI: Wildcard.MANY, SpecialChars.WILDCARD_SINGLE: Wildcard.ONE}
_COMPARE = {
    CompareOperators.LT: Op.LT,
    CompareOperators.LTE: Op.LTE,
    CompareOperators.GT: Op.GT,
    CompareOperators.GTE: Op.GTE,
}
_REGEX_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: "i",
    SigmaRegularExpressionFlag.MULTILINE: "m",
    SigmaRegularExpressionFlag.DOTALL: "s",
}


def is_sigma(doc: Any) -> bool:
    """Anything that looks like it means to be a Sigma rule; `read_sigma` says what is missing."""
    return isinstance(doc, dict) and any(key in doc for key in ("detection", "logsource", "title"))


def read_sigma(doc: dict[str, Any], text: str, path: str,
               placeholders: Mapping[str, tuple[str, ...]] | None = None, native_placeholders: bool = False) -> Rule:
    """Build a `Rule` from one parsed Sigma document (`text` is its source, for line numbers).
    `placeholders` gives the values of `%name%` in `|expand` values (each value a Sigma string:
    `*` and `?` are wildcards); an unresolved one is an error at its line, or with
    `native_placeholders` a `Op.PLACEHOLDER` match the targets write in their own form."""
    origin = Origin(path, locate(text, ("title",)) or 1, format="sigma")
    if "correlation" in doc:
        raise SigmaWmiError("a Sigma correlation is read together with the rule it counts, in the same "
                            "file (---)", origin, "invalid-correlation")
    for key in ("title", "detection", "logsource"):
        if key not in doc:
            raise SigmaWmiError(f"missing required key '{key}'", origin.at(1), "missing-key")
    detection_line = locate(text, ("detection",))
    if not isinstance(doc["detection"], dict):
        raise SigmaWmiError("detection must be a mapping of selections and a condition",
                            origin.at(detection_line), "invalid-sigma")
    if "condition" not in doc["detection"]:
        raise SigmaWmiError("detection has no 'condition'", origin.at(detection_line), "missing-condition")
    for name, body in doc["detection"].items():
        if name != "condition" and (body is None or body == {} or body == []):
            raise SigmaWmiError(f"selection '{name}' is empty", origin.at(locate(text, ("detection", str(name)))),
                                "invalid-sigma")
    condition = doc["detection"]["condition"]
    if not (isinstance(condition, str) or (isinstance(condition, list) and condition
                                           and all(isinstance(c, str) for c in condition))):
        raise SigmaWmiError("condition must be a string or a non-empty list of strings",
                            origin.at(locate(text, ("detection", "condition")) or detection_line), "invalid-sigma")
    _check_value_counts(doc["detection"], text, origin)
    try:
        sigma_rule = SigmaRule.from_dict(doc)
    except SigmaError as err:
        raise SigmaWmiError(_describe(err), origin.at(_error_line(err, text, doc)), "invalid-sigma") from None
    except Exception as err:  # pySigma is not hardened against every shape of input
        raise SigmaWmiError(f"invalid rule structure: {type(err).__name__}: {err}",
                            origin.at(_error_line(err, text, doc)), "invalid-sigma") from None

    logsource = LogSource(
        product=_opt_str(doc["logsource"].get("product")) if isinstance(doc["logsource"], dict) else None,
        category=_opt_str(doc["logsource"].get("category")) if isinstance(doc["logsource"], dict) else None,
        service=_opt_str(doc["logsource"].get("service")) if isinstance(doc["logsource"], dict) else None,
        definition=_opt_str(doc["logsource"].get("definition")) if isinstance(doc["logsource"], dict) else None,
    )
    converter = _ConditionConverter(logsource, origin, text, placeholders or {}, native_placeholders)
    try:
        trees = [converter.convert(cond.parsed) for cond in sigma_rule.detection.parsed_condition]
    except SigmaWmiError:
        raise
    except SigmaError as err:
        raise SigmaWmiError(_describe(err), origin.at(_error_line(err, text, doc)), "invalid-sigma") from None
    except RecursionError:
        raise SigmaWmiError("condition nested too deeply", origin.at(locate(text, ("detection", "condition"))),
                            "too-deep") from None
    except Exception as err:
        raise SigmaWmiError(f"invalid condition: {type(err).__name__}: {err}",
                            origin.at(locate(text, ("detection", "condition"))), "invalid-sigma") from None
    detection = normalize(any_of(trees))

    cat = catalog()
    return Rule(
        **{"id": "", **metadata_fields(DocumentValues(doc, text, origin))},
        detection=detection,
        logsource=logsource,
        related=tuple(
            RelatedRule(str(r.get("id")), str(r.get("type"))) for r in doc.get("related") or ()
            if isinstance(r, dict)
        ),
        fields=tuple(cat.canonical(str(f), logsource) for f in doc.get("fields") or ()),
        origin=origin,
        extras={k: v for k, v in doc.items() if k not in _KNOWN_KEYS},
        source_text=text,
        diagnostics=_escaped_placeholders(doc["detection"], text, origin),
    )


_ESCAPED_PLACEHOLDER = re.compile(r"\\%[A-Za-z0-9_.-]+%")


def _escaped_placeholders(detection: dict[str, Any], text: str, origin: Origin) -> tuple[Diagnostic, ...]:
    """A warning for each `|expand` value with `\\%name%`: a backslash before `%` escapes it (as
    in pySigma), so the placeholder is literal text and the backslash is gone; a path separator
    before a placeholder belongs in its values (`'\\psexec.exe'`)."""
    found = []
    for name, body in detection.items():
        items = [body] if isinstance(body, dict) else [b for b in body if isinstance(b, dict)] \
            if isinstance(body, list) else []
        for item in items:
            for key, values in item.items():
                if "expand" not in str(key).split("|")[1:]:
                    continue
                for value in values if isinstance(values, list) else [values]:
                    escaped = _ESCAPED_PLACEHOLDER.search(value) if isinstance(value, str) else None
                    if escaped:
                        line = _find_field_line(text, str(key).split("|")[0]) or locate(text, ("detection", str(name)))
                        found.append(Diagnostic(
                            Level.WARNING, "escaped-placeholder",
                            f"'{key}': '{escaped.group()}' is not a placeholder: a backslash before '%' escapes it "
                            f"(as in pySigma), so '{escaped.group()[1:]}' is literal text; put the backslash in "
                            "the placeholder's values", origin.at(line)))
    return tuple(found)


# How many values one value becomes under a modifier: pySigma's `windash` gives five dash
# variants (-, /, en dash, em dash, horizontal bar) at every dash matching this pattern, and
# each combination; `base64offset` three encodings.
_WINDASH_DASH = re.compile(r"\B[-/]\b")
_WINDASH_VARIANTS = 5
_BASE64_OFFSETS = 3


def _check_value_counts(detection: dict[Any, Any], text: str, origin: Origin) -> None:
    """Refuse, before pySigma expands anything, a detection item standing for more values than
    MAX_VALUES_PER_ITEM once its modifiers are applied, or a rule for more than MAX_VALUES_PER_RULE
    (a value with 20 dashes under `windash` alone is 5**20 values)."""
    total = 0
    for name, body in detection.items():
        if name == "condition":
            continue
        items = [body] if isinstance(body, dict) else [b for b in body if isinstance(b, dict)] \
            if isinstance(body, list) else []
        if isinstance(body, list) and not items:
            total += len(body)  # keywords
        for item in items:
            for key, values in item.items():
                count = sum(_expanded_count(v, str(key).split("|")[1:])
                            for v in (values if isinstance(values, list) else [values]))
                total += count
                if count > MAX_VALUES_PER_ITEM or total > MAX_VALUES_PER_RULE:
                    limit, scope = ((MAX_VALUES_PER_ITEM, "this item") if count > MAX_VALUES_PER_ITEM
                                    else (MAX_VALUES_PER_RULE, "the rule"))
                    # `locate` follows mapping keys only; in a list of mappings the key's own line is found by text
                    line = (locate(text, ("detection", str(name), str(key))) if isinstance(body, dict) else None) \
                        or _find_field_line(text, str(key)) or locate(text, ("detection", str(name)))
                    raise SigmaWmiError(f"'{key}' makes {scope} stand for more than {limit} values after its "
                                        "modifiers", origin.at(line), "too-many-values")


def _expanded_count(value: Any, modifiers: list[str]) -> int:
    count = 1
    for modifier in modifiers:
        if modifier == "windash" and isinstance(value, str):
            dashes = len(_WINDASH_DASH.findall(value))
            count *= _WINDASH_VARIANTS ** min(dashes, 32)  # capped: already far beyond any limit
        elif modifier == "base64offset":
            count *= _BASE64_OFFSETS
    return count


def metadata_fields(values: DocumentValues) -> dict[str, Any]:
    """`Rule` fields for the descriptive keys the document has (a correlation overrides its base
    rule's); a value of the wrong type is a located error."""
    doc = values.doc
    fields: dict[str, Any] = {}
    if "title" in doc:
        fields["title"] = values.text_value("title") or ""
    if "id" in doc:
        fields["id"] = values.text_value("id") or ""
    if "description" in doc:
        fields["description"] = (values.text_value("description") or "").strip()
    for key in ("status", "level"):
        if key in doc:
            fields[key] = values.text_value(key)
    if "author" in doc:
        fields["authors"] = tuple(a.strip() for a in (values.text_value("author") or "").split(",") if a.strip())
    for key in ("date", "modified"):
        if key in doc:
            fields[key] = _date(values.text_value(key))
    for key in ("references", "falsepositives"):
        if key in doc:
            fields[key] = values.text_list(key)
    if "tags" in doc:
        fields["tags"] = values.text_list("tags")
        fields["tactics"], fields["techniques"] = parse_attack_tags(fields["tags"])
    return fields


_KNOWN_KEYS = frozenset({
    "title", "id", "status", "description", "references", "author", "date", "modified", "tags",
    "logsource", "detection", "falsepositives", "level", "related", "fields",
})

_TACTIC_ALIASES = {"command-control": "command-and-control"}


def parse_attack_tags(tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[Technique, ...]]:
    """Split `attack.*` tags into tactic short names and technique ids.

    `attack.privilege_escalation` and `attack.privilege-escalation` both give
    "privilege-escalation"; `attack.t1546.003` gives T1546.003; group and software
    tags (g0001, s0001) are neither.
    """
    tactics: list[str] = []
    techniques: list[Technique] = []
    for tag in tags:
        namespace, _, name = tag.lower().partition(".")
        if namespace != "attack" or not name:
            continue
        head = name.split(".")[0]
        if head[:1] == "t" and head[1:].isdigit():
            technique = Technique(name.upper())
            if technique not in techniques:
                techniques.append(technique)
        elif head[:1] in ("g", "s") and head[1:].isdigit():
            continue
        else:
            tactic = name.replace("_", "-")
            tactic = _TACTIC_ALIASES.get(tactic, tactic)
            if tactic not in tactics:
                tactics.append(tactic)
    return tuple(tactics), tuple(techniques)


class _ConditionConverter:
    def __init__(self, logsource: LogSource, origin: Origin, text: str,
                 placeholders: Mapping[str, tuple[str, ...]], native_placeholders: bool = False) -> None:
        self.logsource = logsource
        self.origin = origin
        self.text = text
        self.catalog = catalog()
        self.placeholders = placeholders
        self.native_placeholders = native_placeholders

    def convert(self, node: Any) -> Expr:
        if isinstance(node, ConditionAND):
            return And(tuple(self.convert(a) for a in node.args))
        if isinstance(node, ConditionOR):
            return Or(tuple(self.convert(a) for a in node.args))
        if isinstance(node, ConditionNOT):
            return Not(self.convert(node.args[0]))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self.value(self.catalog.canonical(node.field, self.logsource), node.value, node.field)
        if isinstance(node, ConditionValueExpression):
            return self.value(None, node.value, None)
        if node is None:
            raise self.error("the condition selects no detection (does a `1 of x*` pattern match nothing?)",
                             None)
        raise self.error(f"unexpected condition element {type(node).__name__}", None)

    def value(self, field: str | None, value: Any, sigma_field: str | None) -> Expr:
        if isinstance(value, SigmaExpansion):
            return Or(tuple(self.value(field, v, sigma_field) for v in value.values))
        if isinstance(value, SigmaString):  # includes SigmaCasedString
            cased = isinstance(value, SigmaCasedString)
            if any(isinstance(part, Placeholder) for part in value.s):
                native = self.native(field, value, sigma_field)
                return native or patterns_match(field, self.expanded(value, sigma_field), cased)
            return string_match(field, self.pattern(value, sigma_field), cased)
        if isinstance(value, SigmaTimestampPart):
            raise self.error("timestamp-part modifiers (minute, hour, ...) are not supported", sigma_field)
        if isinstance(value, SigmaNumber):
            return Match(field, Op.EQUALS, (value.number,))
        if isinstance(value, SigmaBool):
            return Match(field, Op.EQUALS, (value.boolean,))
        if isinstance(value, SigmaNull):
            return Match(field, Op.NULL)
        if isinstance(value, SigmaExists):
            exists = Match(field, Op.EXISTS)
            return exists if value.exists else Not(exists)
        if isinstance(value, SigmaRegularExpression):
            flags = frozenset(_REGEX_FLAGS[f] for f in value.flags)
            return Match(field, Op.REGEX, (Regex(value.regexp.original, flags),), case_sensitive="i" not in flags)
        if isinstance(value, SigmaCIDRExpression):
            return Match(field, Op.CIDR, (str(value.network),))
        if isinstance(value, SigmaCompareExpression):
            if value.op is CompareOperators.NEQ:
                return Not(Match(field, Op.EQUALS, (value.number.number,)))
            return Match(field, _COMPARE[value.op], (value.number.number,))
        if isinstance(value, SigmaFieldReference):
            if value.starts_with or value.ends_with:
                raise self.error("fieldref with startswith/endswith is not supported", sigma_field)
            other = self.catalog.canonical(value.field, self.logsource)
            return Match(field, Op.FIELDREF, (other,))
        raise self.error(f"unsupported value type {type(value).__name__}", sigma_field)

    def native(self, field: str | None, value: SigmaString, sigma_field: str | None) -> Match | None:
        """With native placeholders, a value that is one unresolved placeholder as a whole is kept
        as a `PLACEHOLDER` match; a target holds the list (a value that only contains one cannot
        be: a lookup or value list holds whole values)."""
        unresolved = [p for p in value.s if isinstance(p, Placeholder) and p.name not in self.placeholders]
        if not self.native_placeholders or not unresolved:
            return None
        if len(value.s) != 1 or field is None:
            raise self.error(f"placeholder %{unresolved[0].name}% has no values, and a target-native list holds "
                             "whole field values only (this value has more than the placeholder)", sigma_field,
                             code="unresolved-placeholder")
        return Match(field, Op.PLACEHOLDER, (unresolved[0].name,))

    def expanded(self, value: SigmaString, sigma_field: str | None) -> list[Pattern]:
        """Every pattern a value with `%name%` placeholders stands for: each placeholder
        replaced by each of its values (a product, bounded like any value list)."""
        choices: list[list[tuple[PatternPart, ...]]] = []
        for part in value.s:
            if isinstance(part, str):
                choices.append([(part,)])
                continue
            if isinstance(part, SpecialChars):
                choices.append([(_WILDCARDS[part],)])
                continue
            values = self.placeholders.get(part.name)
            if values is None:
                known = f"; known: {', '.join(sorted(self.placeholders))}" if self.placeholders else \
                    " (give values with --placeholders FILE)"
                raise self.error(f"placeholder %{part.name}% has no values{known}", sigma_field,
                                 code="unresolved-placeholder")
            if not values:
                raise self.error(f"placeholder %{part.name}% has an empty value list", sigma_field,
                                 code="unresolved-placeholder")
            choices.append([self.pattern(SigmaString(v), sigma_field).parts for v in values])
        count = 1
        for options in choices:
            count *= len(options)
            if count > MAX_VALUES_PER_ITEM:
                raise self.error(f"placeholders make this value stand for more than {MAX_VALUES_PER_ITEM} values",
                                 sigma_field, code="too-many-values")
        return [Pattern(tuple(p for parts in combo for p in parts)) for combo in itertools.product(*choices)]

    def pattern(self, value: SigmaString, sigma_field: str | None) -> Pattern:
        parts: list[PatternPart] = []
        for part in value.s:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, SpecialChars):
                parts.append(_WILDCARDS[part])
            elif isinstance(part, Placeholder):
                raise self.error(
                    f"placeholder %{part.name}% needs a value list (the 'expand' modifier is not resolved)",
                    sigma_field, code="unresolved-placeholder")
            else:
                raise self.error(f"unsupported string part {part!r}", sigma_field)
        return Pattern(tuple(parts))

    def error(self, message: str, sigma_field: str | None, code: str = "unsupported") -> SigmaWmiError:
        line = _find_field_line(self.text, sigma_field) if sigma_field else \
            locate(self.text, ("detection", "condition"))
        where = f" (field '{sigma_field}')" if sigma_field else ""
        return SigmaWmiError(message + where, self.origin.at(line or locate(self.text, ("detection",))), code)


def _describe(err: Exception) -> str:
    message = str(err)
    # pySigma appends " in <path>" when it knows a source; we print our own location.
    return message.split(" in /")[0].split(" in <")[0].strip() or type(err).__name__


def _error_line(err: Exception, text: str, doc: dict[str, Any]) -> int | None:
    """Best line for a pySigma error: the detection key or field it names, else the section."""
    message = str(err)
    detection = doc.get("detection")
    modifier = _modifier_named_in(message)
    if isinstance(detection, dict) and modifier:
        for name, body in detection.items():
            for key in body.keys() if isinstance(body, dict) else ():
                if isinstance(key, str) and modifier in key.split("|")[1:]:
                    return locate(text, ("detection", name, key))
    if isinstance(detection, dict):
        for name, body in detection.items():
            keys = body.keys() if isinstance(body, dict) else ()
            for key in keys:
                if isinstance(key, str) and "|" in key:
                    for modifier in key.split("|")[1:]:
                        if _names(message, modifier):  # whole token: `re` is not the start of `remaining`
                            return locate(text, ("detection", name, key))
            if f"'{name}'" in message:
                return locate(text, ("detection", name))
        if "condition" in message.lower() or "not defined" in message or isinstance(err, SigmaConditionError):
            return locate(text, ("detection", "condition"))
    lowered = message.lower()
    for key in ("logsource", "tags", "date", "modified", "status", "level", "related", "id", "title",
                "falsepositives", "references", "author", "description", "fields"):
        # whole words: the "id" in "invalid" is not the rule's id
        if any(_names(lowered, word) for word in _MESSAGE_KEYS.get(key, (key,))):
            return locate(text, (key,))
    return locate(text, ("detection",))


def _names(message: str, word: str) -> bool:
    """Does `message` contain `word` as a whole token (not inside a longer word or key)?"""
    return bool(word) and re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", message) is not None


# How pySigma's messages name a key, where not by the key itself.
_MESSAGE_KEYS = {"id": ("id", "identifier"), "falsepositives": ("falsepositives", "false positives")}
_MESSAGE_MODIFIERS = {"Regular expression": "re", "CIDR": "cidr"}


def _modifier_named_in(message: str) -> str | None:
    """The Sigma modifier a pySigma error message is about, if it names one."""
    from sigma.modifiers import reverse_modifier_mapping

    for class_name, identifier in reverse_modifier_mapping.items():
        if _names(message, class_name):
            return identifier
    return next((ident for words, ident in _MESSAGE_MODIFIERS.items() if words in message), None)


def _find_field_line(text: str, sigma_field: str) -> int | None:
    for number, line in enumerate(yaml_lines(text), 1):
        stripped = line.strip().lstrip("- ").strip()
        if stripped.startswith(sigma_field + "|") or stripped.startswith(sigma_field + ":"):
            return number
    return None


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _date(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()[:10]
    return str(value).replace("/", "-")
