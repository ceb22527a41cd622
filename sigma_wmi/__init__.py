"""sigma-wmi: compile Sigma rules and Splunk ESCU analytics into SIEM queries and documentation.

    import sigma_wmi
    rules = sigma_wmi.load("rules/")
    spl = sigma_wmi.convert(rules[0], target="splunk", format="tstats")
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from sigma_wmi.api import backend, compile_rule, convert, load, load_all
from sigma_wmi.errors import Diagnostic, Origin, SigmaWmiError, UnsupportedError
from sigma_wmi.model import And, Match, Not, Op, Or, Pattern, Rule, Wildcard

try:  # one version, declared in pyproject.toml
    __version__ = _version("sigma-wmi")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

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
