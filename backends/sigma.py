"""Sigma YAML: the model written back as a Sigma rule that pySigma can read.

Used to publish analytics from other sources (ESCU) as Sigma: canonical fields
go out through the catalog's Sigma names (a process name becomes
`Image|endswith: '\\name'`), the source analytic is named in `related`, and ATT&CK
becomes `attack.<tactic>` / `attack.tNNNN` tags.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from typing import Any, ClassVar

import yaml

from sigma_wmi.backends.base import Backend, OptionSpec, Output, warning
from sigma_wmi.catalog import to_profile
from sigma_wmi.errors import Diagnostic, Level, UnsupportedError
from sigma_wmi.model import (
    Aggregation,
    And,
    Expr,
    Match,
    Not,
    Op,
    Or,
    Pattern,
    Regex,
    Rule,
    Step,
    Temporal,
    Wildcard,
    describe_aggregation,
    format_timespan,
    full_pattern,
)
from sigma_wmi.readers.sigma_correlation import CONDITIONS as CORRELATION_CONDITIONS
from sigma_wmi.readers.sigma_correlation import TYPE_NAMES

# ---------------------------------------------------------------------------
# Escaping: Sigma strings know `*` and `?` as wildcards and `\` as their escape.
# A backslash is literal unless it precedes `*`, `?` or another backslash, so it
# is doubled only there; Windows paths keep their single backslashes.
# ---------------------------------------------------------------------------
_SIGMA_SPECIAL = "*?\\"


def sigma_string(pattern: Pattern) -> str:
    """A pattern as a Sigma string value: wildcard tokens bare, literal `*`/`?` escaped."""
    out: list[str] = []
    for index, part in enumerate(pattern.parts):
        if isinstance(part, Wildcard):
            out.append(part.value)
            continue
        following = pattern.parts[index + 1] if index + 1 < len(pattern.parts) else None
        for position, char in enumerate(part):
            if char in "*?":
                out.append("\\" + char)
            elif char == "\\":
                after = part[position + 1] if position + 1 < len(part) else following
                # before a wildcard token, a special char, or at the very end: escape
                needs = after is None or isinstance(after, Wildcard) or after in _SIGMA_SPECIAL
                out.append("\\\\" if needs else "\\")
            else:
                out.append(char)
    return "".join(out)


_PCRE_HEX = re.compile(r"\\x\{([0-9A-Fa-f]{1,8})\}")


def sigma_regex(pattern: str) -> str:
    """A regex in the Python flavour Sigma tools compile: PCRE `\\x{202E}` → `\\U0000202e`."""
    converted = _PCRE_HEX.sub(lambda m: "\\U" + m.group(1).lower().rjust(8, "0"), pattern)
    try:
        re.compile(converted)
    except re.error as err:
        raise UnsupportedError(f"sigma: regular expression '{pattern}' is not valid in Sigma: {err}") from None
    return converted


class _Detection:
    """Builds Sigma selections and a condition from a (Sigma-named) model tree."""

    STRING_MODIFIERS: ClassVar[dict[Op, str]] = {
        Op.EQUALS: "", Op.CONTAINS: "|contains", Op.STARTSWITH: "|startswith",
        Op.ENDSWITH: "|endswith", Op.WILDCARD: "",
    }
    COMPARE_MODIFIERS: ClassVar[dict[Op, str]] = {Op.LT: "|lt", Op.LTE: "|lte", Op.GT: "|gt", Op.GTE: "|gte"}

    def __init__(self, field_name: Any) -> None:
        self.selections: dict[str, Any] = {}
        self.field_name = field_name

    def new(self, body: Any, negated: bool) -> str:
        prefix = "filter" if negated else "selection"
        name = f"{prefix}_{sum(1 for k in self.selections if k.startswith(prefix)) + 1}"
        self.selections[name] = body
        return name

    def condition(self, expr: Expr, negated: bool = False) -> tuple[str, str]:
        """Condition text and its kind ("atom", "and", "or", "not") for parenthesising."""
        if isinstance(expr, Match):
            return self.new(self.selection([expr]), negated), "atom"
        if isinstance(expr, Not):
            inner, kind = self.condition(expr.item, not negated)
            return "not " + (inner if kind == "atom" else f"({inner})"), "not"
        if isinstance(expr, And):
            parts: list[tuple[str, str]] = []
            grouped: list[Match] = []
            keys: set[str] = set()
            for item in expr.items:
                if isinstance(item, Match) and item.field is not None and self.key(item) not in keys:
                    grouped.append(item)
                    keys.add(self.key(item))
                else:
                    parts.append(self.condition(item, negated))
            if grouped:
                parts.insert(0, (self.new(self.selection(grouped), negated), "atom"))
            return self.join(parts, "and"), "and" if len(parts) > 1 else parts[0][1]
        assert isinstance(expr, Or)
        parts = [self.condition(item, negated) for item in expr.items]
        return self.join(parts, "or"), "or"

    @staticmethod
    def join(parts: list[tuple[str, str]], kind: str) -> str:
        texts = [text if k in ("atom", "not", kind) else f"({text})" for text, k in parts]
        return f" {kind} ".join(texts)

    def key(self, match: Match) -> str:
        name = match.field or ""  # keywords with a modifier are written as `|re:` and the like
        if "|" in name:
            raise UnsupportedError(f"sigma: field name '{name}' contains '|', which Sigma reads as a modifier")
        if match.op in self.STRING_MODIFIERS:
            return name + self.STRING_MODIFIERS[match.op] + ("|cased" if match.case_sensitive and any(
                isinstance(v, Pattern) for v in match.values) else "")
        if match.op in self.COMPARE_MODIFIERS:
            return name + self.COMPARE_MODIFIERS[match.op]
        if match.op is Op.REGEX:
            flags = set().union(*(v.flags for v in match.values if isinstance(v, Regex)))
            return name + "|re" + "".join(f"|{f}" for f in sorted(flags))
        if match.op is Op.CIDR:
            return name + "|cidr"
        if match.op is Op.EXISTS:
            return name + "|exists"
        if match.op is Op.FIELDREF:
            return name + "|fieldref"
        if match.op is Op.PLACEHOLDER:
            return name + "|expand"
        return name  # NULL

    def value(self, match: Match, value: Any) -> Any:
        if isinstance(value, Pattern):
            shown = value if match.op is not Op.WILDCARD else full_pattern(match, value)
            return sigma_string(shown)
        if isinstance(value, Regex):
            return sigma_regex(value.pattern)
        if match.op is Op.FIELDREF:
            return self.field_name(str(value))
        if match.op is Op.PLACEHOLDER:
            return f"%{value}%"
        return value

    def selection(self, items: list[Match]) -> Any:
        if len(items) == 1 and items[0].field is None and items[0].op.is_string:  # keywords: a plain list
            match = items[0]
            return [sigma_string(full_pattern(match, v)) if isinstance(v, Pattern) else v for v in match.values]
        body: dict[str, Any] = {}
        for match in items:
            if match.op is Op.EXISTS:
                body[self.key(match)] = True
            elif match.op is Op.NULL:
                body[self.key(match)] = None
            else:
                values = [self.value(match, v) for v in match.values]
                body[self.key(match)] = values[0] if len(values) == 1 else values
        return body


# Sigma's status values, and what other sources call them.
_STATUS = {"production": "stable", "validation": "test", "stable": "stable", "test": "test",
           "experimental": "experimental", "deprecated": "deprecated", "unsupported": "unsupported"}
_CONDITION_KEYS = {op: key for key, op in CORRELATION_CONDITIONS.items()}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAMESPACE = uuid.UUID("6f1b0c52-1d0e-4d59-9b57-5c0e8e5b1a2d")  # ids of Sigma rules derived from other formats


class SigmaBackend(Backend):
    name = "sigma"
    description = "Sigma rule YAML (readable by pySigma), e.g. to publish ESCU analytics as Sigma"
    formats = ("yaml",)
    extensions: ClassVar[dict[str, str]] = {"yaml": ".yml"}
    echoes_source = "sigma"  # a Sigma rule's page already shows the rule
    options = (
        OptionSpec("level", "level for rules whose source has none (empty: leave it out)", ""),
    )

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)

    def convert(self, rule: Rule, format: str | None = None) -> Output:
        self.check_format(format)
        diagnostics: list[Diagnostic] = []
        doc = self.document(rule, diagnostics)
        if rule.temporal is not None:
            docs = self.temporal(rule, rule.temporal, diagnostics)
        elif rule.aggregation is not None and rule.aggregation.steps:
            docs = self.aggregated_steps(rule, rule.aggregation, diagnostics)
        else:
            docs = [doc] if rule.aggregation is None else self.correlated(doc, rule.aggregation, rule, diagnostics)
        # one comment line per diagnostic: a message may quote multi-line input
        header = "".join(f"# {d.level.value}: {' '.join(d.message.split())}\n" for d in rule.diagnostics
                         if d.level is not Level.INFO)
        text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)
        return Output(header + text, diagnostics)

    # ---- thresholds: a base rule and an event_count / value_count correlation ----
    def correlated(self, doc: dict[str, Any], aggregation: Aggregation, rule: Rule,
                   diagnostics: list[Diagnostic]) -> list[dict[str, Any]]:
        """The correlation takes the rule's id and metadata (it is what alerts); the base rule
        that selects the counted events gets a derived id and a `name` to be referred to by."""
        if aggregation.window is None:
            raise UnsupportedError("sigma: a correlation needs a time span; this threshold counts over the "
                                   "whole search range")
        kinds = {(t.aggregate, t.field) for t in aggregation.thresholds}
        ops = [t.op for t in aggregation.thresholds]
        if len(kinds) != 1 or len(ops) != 1:  # pySigma: "exactly one condition item"
            raise UnsupportedError("sigma: a Sigma correlation condition holds one comparison of one count; this "
                                   f"rule has {len(aggregation.thresholds)} ({describe_aggregation(aggregation)})")
        (aggregate, counted), = kinds
        base_id = doc.get("id") or rule.title
        name = re.sub(r"[^a-z0-9]+", "_", rule.title.lower()).strip("_") or "events"
        base = {"title": f"{rule.title} (events counted)", "id": str(uuid.uuid5(_NAMESPACE, f"events:{base_id}")),
                "name": name, **{k: v for k, v in doc.items() if k not in ("title", "id", "level")}}
        condition: dict[str, Any] = {_CONDITION_KEYS[t.op]: t.value for t in aggregation.thresholds}
        if counted is not None:
            condition = {"field": self.group_field(counted, diagnostics), **condition}
        percentile = {t.percentile for t in aggregation.thresholds if t.percentile is not None}
        if percentile:
            condition["percentile"] = percentile.pop()
        body = {
            "type": TYPE_NAMES[aggregate],
            "rules": [name],
            "group-by": [self.group_field(f, diagnostics) for f in aggregation.group_by],
            "timespan": format_timespan(aggregation.window),
            "condition": condition,
        }
        if not body["group-by"]:
            del body["group-by"]
        correlation = {k: v for k, v in doc.items() if k not in ("logsource", "detection", "fields")}
        correlation["correlation"] = body
        if "level" in correlation:  # keep Sigma's key order: level last
            correlation["level"] = correlation.pop("level")
        return [base, correlation]

    # ---- temporal correlations: the step rules, then the correlation ----
    def temporal(self, rule: Rule, temporal: Temporal, diagnostics: list[Diagnostic]) -> list[dict[str, Any]]:
        condition = {"gte": temporal.min_steps} if temporal.min_steps != len(temporal.steps) else None
        return self.over_steps(rule, temporal.kind, temporal.steps, temporal.group_by, temporal.window, condition,
                               diagnostics)

    def aggregated_steps(self, rule: Rule, aggregation: Aggregation, diagnostics: list[Diagnostic]
                         ) -> list[dict[str, Any]]:
        kinds = {(t.aggregate, t.field, t.percentile) for t in aggregation.thresholds}
        ops = [t.op for t in aggregation.thresholds]
        if len(kinds) != 1 or len(ops) != 1:  # pySigma: "exactly one condition item"
            raise UnsupportedError("sigma: a Sigma correlation condition holds one comparison of one aggregate; "
                                   f"this rule has {describe_aggregation(aggregation)}")
        (aggregate, field, percentile), = kinds
        condition: dict[str, Any] = {"field": field} if field else {}
        if percentile is not None:
            condition["percentile"] = percentile
        condition.update({_CONDITION_KEYS[t.op]: t.value for t in aggregation.thresholds})
        assert aggregation.window is not None
        return self.over_steps(rule, TYPE_NAMES[aggregate], aggregation.steps, aggregation.group_by,
                               aggregation.window, condition, diagnostics, field)

    def over_steps(self, rule: Rule, kind: str, steps: tuple[Step, ...], group_by: tuple[str, ...], window: int,
                   condition: dict[str, Any] | None, diagnostics: list[Diagnostic], value: str | None = None
                   ) -> list[dict[str, Any]]:
        """Each step as a rule with its `name`, then the correlation with the rule's metadata.
        Where a step's field is not named like the correlation's group-by (or aggregated) name,
        `aliases` names the field of every step."""
        docs = []
        names = [*group_by, *([value] if value else [])]
        fields = {s.name: [*s.group_fields, *([s.value_field] if value and s.value_field else [])] for s in steps}
        for step in steps:
            step_doc = self.document(step.rule, diagnostics)
            docs.append({"title": step_doc.pop("title"), **({"id": step_doc.pop("id")} if "id" in step_doc else {}),
                         "name": step.name, **step_doc})
        sigma = {s.name: [self.group_field(f, diagnostics) for f in fields[s.name]] for s in steps}
        aliased = [i for i, name in enumerate(names) if any(sigma[s.name][i] != name for s in steps)]
        body: dict[str, Any] = {"type": kind, "rules": [s.name for s in steps]}
        if group_by:
            body["group-by"] = list(group_by)
        if aliased:  # an alias names a field for every rule
            body["aliases"] = {names[i]: {s.name: sigma[s.name][i] for s in steps} for i in aliased}
        body["timespan"] = format_timespan(window)
        if condition:
            body["condition"] = condition
        own = self.document(replace(rule, temporal=None, aggregation=None), [])
        correlation = {k: v for k, v in own.items() if k not in ("logsource", "detection", "fields")}
        correlation["correlation"] = body
        if "level" in correlation:  # keep Sigma's key order: level last
            correlation["level"] = correlation.pop("level")
        return [*docs, correlation]

    def group_field(self, canonical: str, diagnostics: list[Diagnostic]) -> str:
        name = self.catalog.name_in("sigma", canonical)
        if name:
            return name
        spec = self.catalog.spec(canonical)
        if spec is None:  # not a catalog field: the rule's own Sigma name, kept as the detection keeps it
            return canonical
        source = spec.derive.source if spec.derive else None
        source_name = self.catalog.name_in("sigma", source) if source else None
        if source_name:
            diagnostics.append(Diagnostic(
                Level.WARNING, "group-by-path",
                f"Sigma has no field for {canonical}: the correlation uses {source_name}, the full path, so the "
                "same name in different folders is counted apart", target=self.name))
            return source_name
        raise UnsupportedError(f"sigma: field '{canonical}' has no Sigma taxonomy name to count or group by")

    # ---- the rule ----
    def document(self, rule: Rule, diagnostics: list[Diagnostic]) -> dict[str, Any]:
        derived = rule.source_format != "sigma"
        doc: dict[str, Any] = {"title": rule.title}
        if derived and rule.id:
            doc["id"] = str(uuid.uuid5(_NAMESPACE, f"{rule.source_format}:{rule.id}"))
        elif rule.id:
            doc["id"] = rule.id
        related = [{"id": r.id, "type": r.type} for r in rule.related]
        if derived and rule.id:
            related.insert(0, {"id": rule.id, "type": "derived"})
        if related:
            doc["related"] = related
        status = _STATUS.get((rule.status or "").lower())
        if status:
            doc["status"] = status
        if rule.description:
            doc["description"] = rule.description
        if rule.references:
            doc["references"] = list(rule.references)
        if rule.authors:
            doc["author"] = ", ".join(rule.authors)
        for key, value in (("date", rule.date), ("modified", rule.modified)):
            if value and _DATE.match(value):
                doc[key] = value
            elif value:
                diagnostics.append(warning("bad-date", f"{key} '{value}' is not YYYY-MM-DD; left out"))
        tags = self.tags(rule)
        if tags:
            doc["tags"] = tags
        doc["logsource"] = {k: v for k, v in (("product", rule.logsource.product),
                                               ("category", rule.logsource.category),
                                               ("service", rule.logsource.service),
                                               ("definition", rule.logsource.definition)) if v}
        doc["detection"] = self.detection(rule, diagnostics)
        if rule.fields:
            doc["fields"] = [self.field_name(f) for f in rule.fields]
        if rule.falsepositives:
            doc["falsepositives"] = list(rule.falsepositives)
        level = rule.level or self.settings["level"]
        if level:
            doc["level"] = level
        return doc

    def tags(self, rule: Rule) -> list[str]:
        tags = [f"attack.{t}" for t in rule.tactics]
        tags += [f"attack.{t.id.lower()}" for t in rule.techniques]
        for tag in rule.tags:  # keep the source's other tags (cve, detection, car, ...)
            if not tag.lower().startswith("attack.") and "." in tag and tag not in tags:
                tags.append(tag)
        return list(dict.fromkeys(tags))

    # ---- the detection ----
    def field_name(self, canonical: str) -> str:
        return self.catalog.name_in("sigma", canonical) or canonical

    def detection(self, rule: Rule, diagnostics: list[Diagnostic]) -> dict[str, Any]:
        def unknown(name: str) -> str:
            diagnostics.append(Diagnostic(
                Level.WARNING, "no-sigma-field",
                f"field '{name}' has no Sigma taxonomy name; written as '{name}'", target=self.name))
            return name

        expr = _split_regex_flags(to_profile(rule.detection, "sigma", unknown, diagnostics, self.catalog))
        builder = _Detection(self.field_name)
        condition, _ = builder.condition(expr)
        return {**builder.selections, "condition": condition}


def _split_regex_flags(expr: Expr) -> Expr:
    """A `|re` key carries one flag set; regex values with different flags become an OR."""
    if isinstance(expr, Match):
        if expr.op is not Op.REGEX:
            return expr
        groups: dict[frozenset[str], list[Regex]] = {}
        for value in expr.values:
            assert isinstance(value, Regex)
            groups.setdefault(value.flags, []).append(value)
        if len(groups) == 1:
            return expr
        return Or(tuple(replace(expr, values=tuple(values)) for values in groups.values()))
    if isinstance(expr, Not):
        return Not(_split_regex_flags(expr.item))
    if isinstance(expr, And):
        return And(tuple(_split_regex_flags(i) for i in expr.items))
    return Or(tuple(_split_regex_flags(i) for i in expr.items))
