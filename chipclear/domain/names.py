"""Company names compared as people mean them: buyers, vendors, consignees.

One rule for every comparison of two company names (the per-buyer cap, batch priority, the vendor
list, invoice identity), so 'Huawei' and 'Huawei Co., Ltd.' are one company everywhere or nowhere.
"""

from __future__ import annotations

import re

# Legal-form and corporate words that do not distinguish one buyer from another.
_LEGAL_WORDS = {
    "co", "company", "corp", "corporation", "inc", "incorporated", "ltd", "limited", "llc", "plc",
    "group", "holding", "holdings", "international", "technology", "technologies", "tech", "sa", "ag",
    "gmbh", "pte", "bv", "nv",
}  # fmt: skip


def normalise_buyer(name: str) -> str:
    """'ByteDance Ltd.' -> 'bytedance'; 'Alibaba Group Holding Limited' -> 'alibaba'."""
    words = re.sub(r"[^\w\s]", " ", name.casefold()).split()
    kept = [word for word in words if word not in _LEGAL_WORDS]
    return " ".join(kept or words)
