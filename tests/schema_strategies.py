"""Hypothesis strategies for peer messages, read off their declared schemas (`msgspec.inspect`).

`message(schema)` draws a dict for one message type: each declared field either gets a value that fits
its declared type and bounds, or junk (a wrong type, a huge or hostile value, a path escape), or is left
out; now and then an undeclared field is added. So a run mixes valid messages with every kind of invalid
one, which is what a node must take without a traceback.
"""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**210),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["../../x", "/etc/passwd", "a/b", "..", "", "\x00", "x" * 5000, "0" * 64, "f" * 64]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def valid(t: mi.Type, depth: int = 0) -> st.SearchStrategy:
    """Values that fit the declared type ``t`` (bounds included), small."""
    if depth > 6:  # deep enough: containers come out empty, scalars as they are
        match t:
            case mi.ListType() | mi.SetType() | mi.FrozenSetType() | mi.VarTupleType() if not t.min_length:
                return st.just([])
            case mi.DictType() if not t.min_length:
                return st.just({})
            case mi.StructType() | mi.DataclassType() | mi.TypedDictType() | mi.ListType() | mi.DictType():
                return st.nothing()
    match t:
        case mi.NoneType():
            return st.none()
        case mi.BoolType():
            return st.booleans()
        case mi.IntType():
            lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**40))
            hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**40)
            return st.integers(min_value=lo, max_value=hi)
        case mi.FloatType():
            lo = t.ge if t.ge is not None else t.gt
            hi = t.le if t.le is not None else t.lt
            return st.floats(
                min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False, exclude_min=t.gt is not None
            )
        case mi.StrType():
            if t.pattern:
                text = st.from_regex(t.pattern, fullmatch=True)
            else:
                text = st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 30, 30))
            return text.filter(
                lambda s: (t.max_length is None or len(s) <= t.max_length) and len(s) >= (t.min_length or 0)
            )
        case mi.BytesType() | mi.ByteArrayType() | mi.MemoryViewType():
            return st.binary(max_size=64)
        case mi.LiteralType():
            return st.sampled_from(list(t.values))
        case mi.ListType() | mi.SetType() | mi.FrozenSetType() | mi.VarTupleType():
            n = min(t.max_length if t.max_length is not None else 4, 4)
            return st.lists(valid(t.item_type, depth + 1), min_size=min(t.min_length or 0, n), max_size=n)
        case mi.DictType():
            n = min(t.max_length if t.max_length is not None else 3, 3)
            return st.dictionaries(valid(t.key_type, depth + 1), valid(t.value_type, depth + 1), max_size=n)
        case mi.UnionType():
            return st.one_of([valid(x, depth + 1) for x in t.types])
        case mi.StructType() | mi.DataclassType() | mi.TypedDictType():
            return fields_of(t, depth + 1, junk=False)
        case mi.AnyType():
            return JUNK
        case _:
            return JUNK


def fields_of(t, depth: int = 0, junk: bool = True) -> st.SearchStrategy:
    """A dict with the fields of a struct type: valid values, junk (when ``junk``), or missing."""
    required = sorted(f.name for f in t.fields if f.required)

    @st.composite
    def build(draw):
        out = {}
        for f in t.fields:
            if f.required or draw(st.booleans()):
                if not junk or draw(st.integers(0, 5)):  # mostly valid values, some junk
                    out[f.name] = draw(valid(f.type, depth))
                else:
                    out[f.name] = draw(JUNK)
        if junk and required and draw(st.integers(0, 9)) == 0:
            out.pop(draw(st.sampled_from(required)), None)  # a required field left out
        if junk and draw(st.integers(0, 9)) == 0:
            out["undeclared"] = draw(JUNK)
        return out

    return build()


def message(schema: type[msgspec.Struct]) -> st.SearchStrategy:
    """A wire message of ``schema``'s type (``t`` set), valid or not."""
    info = mi.type_info(schema)
    assert isinstance(info, mi.StructType)
    return fields_of(info).map(lambda d: {**d, info.tag_field or "t": info.tag})
