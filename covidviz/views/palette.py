"""Colours of a map's categories from the one palette (``views.style.PALETTE``), never two alike.

A legend whose entries share a colour cannot be read: the Latent space map of a 14-finding multi-label
experiment has 30+ label combinations and the 16-colour palette used to wrap round. Here every category
keeps the colour it has on every page (a class's ``class_colours``, the outcome colours, a set's), the
others take the palette's colours nobody has, most numerous first, and what is left when they run out is
grouped as one "other" entry in a grey of its own. Streamlit-free.
"""

from __future__ import annotations

from covidviz.views.style import (
    MISSING_COLOUR,
    NO_FINDING,
    NO_FINDING_COLOUR,
    PALETTE,
    SELECTION_COLOUR,
    UNKNOWN,
    UPLOAD_COLOUR,
)

OTHER = "other"
OTHER_COLOUR = "#5c5c5c"    # a dark grey: apart from "No finding" (#8c8c8c) and "unknown" (#BBBBBB)
GREYS = {NO_FINDING: NO_FINDING_COLOUR, UNKNOWN: MISSING_COLOUR}
HIGHLIGHTS = {SELECTION_COLOUR.lower(), UPLOAD_COLOUR.lower()}


def legend_colours(categories, fixed: dict[str, str] | None = None, palette=PALETTE,
                   reserve: int = 0) -> tuple[dict[str, str], list[str]]:
    """(category -> its colour, the categories grouped as ``OTHER``) for ``categories`` in legend order
    (most important first). ``fixed``: colours the categories have elsewhere (kept unless another category
    took that colour first); "No finding" and "unknown" keep their greys. The rest take the palette's free
    colours in order (first those that no category owns), all but ``reserve`` that are not a highlight's
    (left for the traces drawn over the map: ``free_colours``); none is used twice, and the categories
    left without one are returned as the others."""
    fixed = {**(fixed or {}), **GREYS}
    out, used, others = {}, set(), []
    for cat in categories:  # the fixed colours first, so a free colour never takes a class's own
        colour = fixed.get(cat)
        if colour is not None and colour.lower() not in used:
            out[cat] = colour
            used.add(colour.lower())
    # Free: the colours nobody shows; those no category owns elsewhere first, then those of categories absent
    # here (an absent class's colour beats grouping a large category as "other").
    owned = {v.lower() for v in fixed.values()}
    free = [c for c in palette if c.lower() not in used]
    free = [c for c in free if c.lower() not in owned] + [c for c in free if c.lower() in owned]
    reserved = set(_spare(free)[-reserve:]) if reserve > 0 else set()
    free = [c for c in free if c not in reserved]
    for cat in categories:
        if cat in out:
            continue
        if free:
            out[cat] = free.pop(0)
        else:
            others.append(cat)
    return out, others


def other_label(others: list[str], n_images: int) -> str:
    """The legend entry of the grouped categories: 'other: 12 rarer groups (1,234)'."""
    return f"{OTHER}: {len(others)} rarer group{'s' if len(others) != 1 else ''} ({n_images:,})"


def set_colours(order: list[str], palette=PALETTE) -> dict[str, str]:
    """Set name (Train, Validation, Test, External: site, ...: ``views.external.set_order``) -> colour, by
    its place in ``order``: the same on the Latent space and SOM pages whichever sets are shown."""
    return {name: palette[k % len(palette)] for k, name in enumerate(order)}


def free_colours(used, n: int, palette=PALETTE) -> list[str]:
    """``n`` colours of the palette that are neither in ``used`` nor a highlight's, from its end (where
    ``legend_colours(..., reserve=n)`` left them; fewer when the palette runs out)."""
    taken = {str(c).lower() for c in used}
    spare = _spare([c for c in palette if c.lower() not in taken])
    return spare[-n:] if n > 0 else []


def _spare(colours) -> list[str]:
    """``colours`` without the highlights' (the selection's black, the upload's magenta): an outline drawn
    over the map in either would read as a highlight."""
    return [c for c in colours if c.lower() not in HIGHLIGHTS]
