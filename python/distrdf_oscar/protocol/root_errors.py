"""Reading ROOT's errors as they reach Python: the C++ reason first, cppyy's overload dump after.

cppyy reports a failing C++ call (a template instantiation, a constructor) as a ``TypeError``
listing every overload it tried, each with the C++ exception it raised; the one line a user needs
(``Unknown column: "pt"``) is buried in that dump.
"""

from __future__ import annotations

import re

_CPP_REASON = re.compile(r"(?:[a-z_]*error|invalid_argument|out_of_range|logic_error|exception): (.+)")


def cpp_reasons(text: str) -> list[str]:
    """The distinct C++ exception messages in a cppyy error text, in order of appearance."""
    return list(dict.fromkeys(m.strip() for m in _CPP_REASON.findall(text)))


def headline(exc: BaseException) -> str:
    """``Type: message`` of an exception, its C++ reasons first when cppyy buried them in a dump."""
    text = f"{type(exc).__name__}: {exc}"
    reasons = cpp_reasons(str(exc)) if "\n" in str(exc) else []
    if not reasons:
        return text
    return f"{'; '.join(reasons)} (from {text})"
