"""sigma-wmi: compile Sigma rules and Splunk ESCU analytics into SIEM queries and documentation.

    import sigma_wmi
    rules = sigma_wmi.load("rules/")
    spl = sigma_wmi.convert(rules[0], target="splunk", format="tstats")
"""

from sigma_wmi.api import backend, compile_rule, convert, load, load_all
from sigma_wmi.errors import Diagnostic, Origin, SigmaWmiError, UnsupportedError
from sigma_wmi.model import And, Match, Not, Op, Or, Pattern, Rule, Wildcard

__version__ = "0.1.0"

__all__ = [
    "And",
    "Diagnostic",
    "Match",
    "Not",
    "Op",
    "Or",
    "Origin",
    "Pattern",
    "Rule",
    "SigmaWmiError",
    "UnsupportedError",
    "Wildcard",
    "__version__",
    "backend",
    "compile_rule",
    "convert",
    "load",
    "load_all",
]
